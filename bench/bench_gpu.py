"""GPU figures for the model API's own model path (``app_api.model.load_model``):
per-image latency at batch 1 and images/s at batch 32, eager fp32, fp16 autocast (what
the API runs on CUDA) and fp16 with a CUDA graph; and what bounds a GPU host, JPEG
decoding: PIL on one CPU core (full and draft mode) against nvjpeg on the GPU.

    python bench/bench_gpu.py [--model food11.pth] [--image photo.jpg]

Needs only this repository and torch/torchvision/numpy/pillow. Exits with a message
(status 0) where no CUDA device is present. Runs well under 2 minutes.
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn, n: int, sync) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def throughput(fn, batch: int, n: int, sync) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return batch * n / (time.perf_counter() - t0)


def default_image() -> bytes:
    """The lab's large photo when present, else a noisy 1280x1280 JPEG of similar size."""
    from tests.images import LARGE_PHOTO

    if LARGE_PHOTO.exists():
        return LARGE_PHOTO.read_bytes()
    import numpy as np
    from PIL import Image

    from tests.images import encode, textured

    base = np.asarray(textured((1280, 1280)), dtype=np.int16)
    noise = np.random.default_rng(0).integers(-40, 40, base.shape)
    return encode(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)), quality=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="a model file in any form the API loads "
                   "(default: the lab's MobileNetV2 with random weights)")
    p.add_argument("--image", type=Path, help="a large JPEG (default: the lab's 1280x1280 photo)")
    p.add_argument("--allow-pickle", action="store_true")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing to measure (run it on a GPU host)")
        return 0
    from app_api.model import build_mobilenet_v2, load_model
    from app_api.preprocess import open_image, prepare

    dev = torch.device("cuda")
    sync = torch.cuda.synchronize
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")

    tmp = tempfile.TemporaryDirectory()
    path = args.model
    if path is None:
        path = Path(tmp.name) / "food11_state_dict.pth"
        torch.save(build_mobilenet_v2().state_dict(), path)
    model = load_model(path, device="cuda", allow_pickle=args.allow_pickle)
    print(f"model: {model.info.arch} ({model.info.form}), version {model.info.version}")
    crop = model.info.preprocessing.crop
    half = model.module  # FeatureClassifier, channels_last, fp16, on the GPU
    net = copy.deepcopy(half).float()

    rows = []
    for batch, n_lat, n_tp in ((1, 200, 300), (32, 30, 60)):
        x32 = torch.randn(batch, 3, crop, crop, device=dev).to(memory_format=torch.channels_last)

        def eager(x32=x32):
            with torch.inference_mode():
                net(x32)

        def autocast(x32=x32):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                net(x32)

        static = x32.half()

        def half_eager(static=static, half=half):
            with torch.inference_mode():
                half(static)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                half(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            half(static)

        images = np.random.default_rng(batch).integers(0, 256, (batch, crop, crop, 3), np.uint8)

        def api_path(images=images):
            model.infer(images)  # uint8 upload, normalise, fp16 autocast, softmax, copy back

        for name, fn in (("eager fp32", eager), ("fp16 autocast", autocast),
                         ("fp16 eager (.half())", half_eager), ("fp16 CUDA graph", graph.replay),
                         ("API infer() (uint8 in, probs out)", api_path)):
            for _ in range(5):
                fn()
            sync()
            lat = statistics.median(timed(fn, n_lat, sync)) * 1000
            rows.append((name, batch, lat, lat / batch, throughput(fn, batch, n_tp, sync)))

    # The API's fp16 graph path against an fp32 eager forward of the same images.
    check = np.random.default_rng(7).integers(0, 256, (8, crop, crop, 3), np.uint8)
    got, _ = model.infer(check)
    ref_model = load_model(path, device="cpu", allow_pickle=args.allow_pickle)
    want, _ = ref_model.infer(check)
    tmp.cleanup()
    print(f"fp16 graph vs fp32 CPU: max |dp| {np.abs(got - want).max():.4f}, same top-1 "
          f"{int((got.argmax(1) == want.argmax(1)).sum())}/8")
    print(f"\n{'path':<34}{'batch':>6}{'ms/batch':>10}{'ms/image':>10}{'images/s':>11}")
    for name, batch, lat, per, tp in rows:
        print(f"{name:<34}{batch:>6}{lat:>10.2f}{per:>10.3f}{tp:>11.0f}")

    # Decoding: what feeds the GPU.
    data = args.image.read_bytes() if args.image else default_image()
    from PIL import Image

    torch.set_num_threads(1)

    def pil_full():
        with Image.open(io.BytesIO(data)) as im:
            im.convert("RGB").load()

    def pil_draft():
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (256, 256))
            im.load()

    def api_prepare():
        prepare(open_image(data, 10**9), model.info.preprocessing)

    with Image.open(io.BytesIO(data)) as im:
        size = im.size
    print(f"\nJPEG decode, {size[0]}x{size[1]}, {len(data) // 1024} KiB:")
    for name, fn in (("PIL full decode, 1 core", pil_full), ("PIL draft mode, 1 core", pil_draft),
                     ("API prepare() (draft+resize+crop)", api_prepare)):
        ms = statistics.median(timed(fn, 15, lambda: None)) * 1000
        print(f"  {name:<36}{ms:8.1f} ms/image {1000 / ms:9.0f} images/s")
    try:
        from torchvision.io import decode_jpeg

        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        for batch in (1, 64):
            batch_in = [raw] * batch

            def nvjpeg(batch_in=batch_in):
                decode_jpeg(batch_in, device="cuda")

            for _ in range(3):
                nvjpeg()
            sync()
            tp = throughput(nvjpeg, batch, max(5, 200 // batch), sync)
            print(f"  {'nvjpeg (decode_jpeg on cuda), batch ' + str(batch):<36}"
                  f"{1000 / tp:8.2f} ms/image {tp:9.0f} images/s")
    except (ImportError, RuntimeError) as e:
        print(f"  nvjpeg: not available ({e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
