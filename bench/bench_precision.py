"""Forward-pass speed and agreement of reduced-precision forms of the serving export,
against the fp32 ONNX Runtime graph that the API serves: the measurement behind
docs/api.md's "Reduced precision" (why the API serves fp32).

    python bench/bench_precision.py            # both models, 5 runs: about 3 minutes
    python bench/bench_precision.py --quick    # 2 runs of a few batches, to check it works

Forms, each of the same ``gourmetgram export-onnx`` graph (uint8 images in,
probabilities and drift features out), on one thread as each inference thread runs:

- ``ort-fp32``: ONNX Runtime, the served graph;
- ``ort-int8``: ONNX Runtime on an int8 static quantization of it (QDQ, per-channel
  int8 weights, uint8 activations calibrated on photos disjoint from the held ones);
- ``ov-fp32``, ``ov-bf16``, ``ov-int8``: OpenVINO on the fp32 graph, with bf16
  inference precision, and on the int8 graph; only where ``openvino`` is importable
  (it is not a project dependency: ``pip install openvino`` into the venv first).

Models: the lab's MobileNetV2 with random weights (the model bench_api serves; its
answers are close to uniform, so its top-1 agreement says nothing) and the demo model
(ImageNet-trained EfficientNet-Lite0, an honest classifier). Held images: crops of the
shared photos (bench_rollouts.photo_pool) and export-onnx's synthetic check images.
Agreement is against ``ort-fp32``: top-1 share, largest probability difference, and
largest feature difference over the features' scale (the drift detector's inputs).
Speed: milliseconds per image at batch 1 and 8, min/median/max over ``--repeat`` runs
with the forms interleaved in each run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app_api.inference import INPUT_NAME, OUTPUT_NAMES, load_onnx  # noqa: E402
from app_api.onnx_export import check_images, export_onnx  # noqa: E402
from bench.bench_rollouts import photo_pool  # noqa: E402


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """ONNX Runtime's static quantization of ``fp32``, calibrated one image at a time."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Images(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{INPUT_NAME: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self._it, None)

    prepared = out.with_name(out.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out), Images(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    prepared.unlink()
    return out


class OpenVinoForm:
    """An ONNX graph compiled by OpenVINO for one CPU thread; ``infer`` as OnnxModel's."""

    def __init__(self, path: Path, precision: str):
        import openvino as ov

        self._compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision})
        self._request = self._compiled.create_infer_request()

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._request.infer({0: images})
        return tuple(np.array(out[self._compiled.output(name)]) for name in OUTPUT_NAMES)


def have_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def forms(model_path: Path, fp32: Path, int8: Path, openvino: bool) -> dict:
    """Each form by name; the ONNX Runtime ones are opened as the API opens its export
    (the quantization keeps the export's metadata)."""
    out = {"ort-fp32": load_onnx(model_path, onnx_file=fp32),
           "ort-int8": load_onnx(model_path, onnx_file=int8)}
    if openvino:
        out |= {"ov-fp32": OpenVinoForm(fp32, "f32"), "ov-bf16": OpenVinoForm(fp32, "bf16"),
                "ov-int8": OpenVinoForm(int8, "f32")}
    return out


def agreement(reference, form, images: np.ndarray) -> dict:
    """``form`` against ``reference`` on ``images``, in batches of 8. Not export-onnx's
    check: that one floors the features' scale at 1e-6, and the random-weights
    MobileNetV2's features are about 1e-8, so its relative differences would read ~100x
    too small."""
    ref_p, ref_f, p, f = [], [], [], []
    for i in range(0, len(images), 8):
        (a_p, a_f), (b_p, b_f) = reference.infer(images[i:i + 8]), form.infer(images[i:i + 8])
        ref_p.append(a_p)
        ref_f.append(a_f)
        p.append(b_p)
        f.append(b_f)
    ref_p, ref_f, p, f = map(np.concatenate, (ref_p, ref_f, p, f))
    return {
        "images": int(len(images)),
        "top1_agreement": float((ref_p.argmax(1) == p.argmax(1)).mean()),
        "reference_classes": int(len(set(ref_p.argmax(1).tolist()))),
        "max_prob_diff": float(np.abs(ref_p - p).max()),
        "max_feature_diff": float(np.abs(ref_f - f).max() / max(float(np.abs(ref_f).max()), 1e-12)),
    }


def ms_per_image(form, images: np.ndarray, batch: int, iterations: int) -> float:
    x = np.ascontiguousarray(images[:batch])
    form.infer(x)
    start = time.perf_counter()
    for _ in range(iterations):
        form.infer(x)
    return (time.perf_counter() - start) / iterations / batch * 1000


def measure(model_path: Path, repeat: int, iterations: int, calibration_n: int,
            held_n: int) -> dict:
    """Exports ``model_path`` (beside it), quantizes, and measures every form."""
    from app_api.model import load_model
    from tests.canary_faults import model_inputs

    fp32, _ = export_onnx(model_path)
    torch_model = load_model(model_path, device="cpu")
    crop = torch_model.info.preprocessing.crop
    calibration = model_inputs(torch_model, photo_pool(calibration_n, seed=1))
    held = np.concatenate([model_inputs(torch_model, photo_pool(held_n, seed=2)),
                           check_images(crop, held_n, seed=5)])
    int8 = quantize_int8(fp32, model_path.with_name(model_path.name + ".int8.onnx"), calibration)
    by_name = forms(model_path, fp32, int8, have_openvino())
    reference = by_name["ort-fp32"]
    result = {name: {"agreement": agreement(reference, f, held), "ms": {1: [], 8: []}}
              for name, f in by_name.items()}
    for _ in range(repeat):
        for batch in (1, 8):
            for name, f in by_name.items():
                result[name]["ms"][batch].append(
                    ms_per_image(f, held, batch, max(1, iterations // batch)))
    return result


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}"


def print_table(model: str, result: dict) -> None:
    base = {b: statistics.median(result["ort-fp32"]["ms"][b]) for b in (1, 8)}
    print(f"\n{model}: ms per image, min/median/max (speed-up of the median against ort-fp32)")
    print(f"{'form':<9} {'batch 1':>22} {'batch 8':>22} {'top-1 agree':>12} "
          f"{'max dP':>8} {'max dF/F':>9}")
    for name, r in result.items():
        cells = [f"{spread(r['ms'][b])} ({base[b] / statistics.median(r['ms'][b]):.2f}x)"
                 for b in (1, 8)]
        a = r["agreement"]
        print(f"{name:<9} {cells[0]:>22} {cells[1]:>22} {a['top1_agreement']:>12.3f} "
              f"{a['max_prob_diff']:>8.2e} {a['max_feature_diff']:>9.2e}")
    a = result["ort-fp32"]["agreement"]
    print(f"({a['images']} held images; ort-fp32 puts them in {a['reference_classes']} classes)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--iterations", type=int, default=64, help="images per timed run")
    p.add_argument("--quick", action="store_true", help="2 runs of 8 images")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.iterations = 2, 8
    import torch

    from app_api.demo_model import build_demo_model
    from app_api.model import build_mobilenet_v2

    tmp = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    try:
        torch.manual_seed(0)
        lab = tmp / "mobilenet_v2_random.pth"
        torch.save(build_mobilenet_v2().eval().state_dict(), lab)
        demo = build_demo_model(tmp / "demo-model.pt")
        n = (16, 16) if args.quick else (64, 96)
        results = {name: measure(path, args.repeat, args.iterations, *n)
                   for name, path in (("lab MobileNetV2 (random weights)", lab),
                                      ("demo EfficientNet-Lite0", demo))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not have_openvino():
        print("openvino is not installed: the ov-* forms are left out")
    for model, result in results.items():
        print_table(model, result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
