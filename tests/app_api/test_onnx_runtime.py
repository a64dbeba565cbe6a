"""The ONNX Runtime path: ``export-onnx`` checks the export against torch and refuses a
disagreeing one, serving on it keeps torch out of the process and gives drift its
features, and a missing, damaged or stale export is refused at start-up in one line
(``FOOD11_RUNTIME=onnx``) or served with torch (``auto``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import requests
import torch

from app_api.inference import load_for_serving, load_onnx, onnx_path_for
from app_api.model import build_mobilenet_v2, load_model
from app_api.model_info import ModelLoadError
from app_api.onnx_export import FEATURE_TOLERANCE, PROB_TOLERANCE, check_images, export_onnx
from tests.app_api.onnx_nets import IndexAddNet
from tests.gourmetgram.commands.test_cli_serve_api import assert_one_line_usage_error, run_cli
from tests.images import photo_bytes
from tests.procs import REPO_ROOT, child_env, free_port


def _mobilenet(path, seed: int):
    torch.manual_seed(seed)
    torch.save(build_mobilenet_v2().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The lab's MobileNetV2 (random weights) as a state_dict, and its export."""
    model = _mobilenet(tmp_path_factory.mktemp("onnx") / "food11.pth", seed=1)
    out, check = export_onnx(model)
    return model, out, check


def test_export_agrees_with_torch_and_says_by_how_much(exported):
    model, out, check = exported
    assert out == onnx_path_for(model) and out.is_file()
    assert check["images"] >= 20 and check["top1_mismatches"] == []
    assert check["max_prob_diff"] <= PROB_TOLERANCE
    assert check["max_feature_diff"] <= FEATURE_TOLERANCE
    # The serving forms agree on images the check did not use, in any batch size.
    torch_model, onnx_model = load_model(model, device="cpu"), load_onnx(model)
    images = check_images(224, n=10, seed=7)
    for batch in (images[:1], images[:3], images):
        tp, tf = torch_model.infer(batch)
        op, of = onnx_model.infer(batch)
        assert (tp.argmax(1) == op.argmax(1)).all()
        assert np.abs(tp - op).max() <= PROB_TOLERANCE
        assert of.shape == tf.shape == (len(batch), 1280)
        assert np.abs(tf - of).max() <= FEATURE_TOLERANCE * np.abs(tf).max()
    info = onnx_model.info
    assert (info.runtime, info.sha256, info.feature_dim) == ("onnx", torch_model.info.sha256, 1280)
    assert info.version == torch_model.info.version


def test_export_that_disagrees_with_torch_is_refused_and_not_written(tmp_path):
    model = tmp_path / "indexadd.pt"
    torch.manual_seed(0)
    torch.save(IndexAddNet().eval(), model)
    with pytest.raises(ModelLoadError, match="was not written: top-1 class differs from torch"):
        export_onnx(model, allow_pickle=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["indexadd.pt"]


def test_demo_model_exports(demo_model, tmp_path):
    model = shutil.copy(demo_model, tmp_path / "demo.pt")
    _, check = export_onnx(model)
    assert check["top1_mismatches"] == [] and check["max_prob_diff"] <= PROB_TOLERANCE


@pytest.mark.parametrize(("runtime", "max_batch", "served"),
                         [("onnx", None, 1), ("torch", None, 8), ("onnx", 4, 4), ("torch", 2, 2)])
def test_batch_size_default_follows_the_runtime(exported, runtime, max_batch, served):
    """ONNX Runtime on the CPU does not batch unless told (a batch costs more per image
    there, docs/api.md); torch batches up to 8."""
    from fastapi.testclient import TestClient

    from app_api.main import create_app
    from app_api.settings import ApiSettings

    model, _, _ = exported
    app = create_app(ApiSettings(model=model, runtime=runtime, device="cpu",
                                 drift_bootstrap_samples=0, max_batch=max_batch))
    with TestClient(app) as client:
        info = client.get("/model").json()
        assert client.post("/predict", content=photo_bytes(),
                           headers={"content-type": "image/jpeg"}).status_code == 200
    assert (info["runtime"], info["max_batch"]) == (runtime, served)
    assert app.state.serving["batcher"].max_batch == served
    # A lone forward pass on two intra-op threads: ONNX Runtime only (the default).
    assert info["solo_threads"] == (2 if runtime == "onnx" else 0)


@pytest.mark.parametrize(("field", "value", "parsed"), [
    ("max_batch", "", None), ("max_batch", "3", 3), ("max_batch", "0", ValueError),
    ("max_batch", "257", ValueError), ("max_batch", "many", ValueError),
    ("solo_threads", "0", 0), ("solo_threads", "4", 4), ("solo_threads", "-1", ValueError),
    ("solo_threads", "65", ValueError), ("solo_threads", "two", ValueError),
])
def test_runtime_settings_from_the_environment(monkeypatch, field, value, parsed):
    from app_api.settings import ApiSettings

    monkeypatch.setenv(f"FOOD11_{field.upper()}", value)
    if parsed is ValueError:
        with pytest.raises(ValueError, match=field):
            ApiSettings()
    else:
        assert getattr(ApiSettings(), field) == parsed


SERVE_WITHOUT_TORCH = textwrap.dedent("""
    import json, sys
    from fastapi.testclient import TestClient
    from app_api.main import create_app
    from app_api.settings import ApiSettings
    from tests.images import photo_bytes

    settings = ApiSettings(model=sys.argv[1], runtime=sys.argv[2], device="cpu",
                           drift_bootstrap_samples=0, inference_threads=2)
    app = create_app(settings)
    features = []
    app.state.feature_sinks.append(lambda f: features.append(f.shape))
    with TestClient(app) as client:
        answers = [client.post("/predict", content=photo_bytes(),
                               headers={"content-type": "image/jpeg"}) for _ in range(3)]
        info = client.get("/model").json()
    print(json.dumps({"status": [a.status_code for a in answers],
                      "prediction": answers[0].json()["prediction"], "runtime": info["runtime"],
                      "features": [list(s) for s in features],
                      "torch_loaded": "torch" in sys.modules}))
""")


@pytest.mark.parametrize("runtime", ["onnx", "auto"])
def test_serving_on_onnx_never_imports_torch_and_feeds_drift(exported, runtime):
    model, _, _ = exported
    res = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TORCH, str(model), runtime],
                         capture_output=True, text=True, cwd=REPO_ROOT, env=child_env(),
                         timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["status"] == [200, 200, 200]
    assert out["runtime"] == "onnx" and out["torch_loaded"] is False
    assert out["features"] == [[1280]] * 3
    # The same answer as torch on the same image.
    from app_api.preprocess import image_from_bytes

    torch_model = load_model(model, device="cpu")
    probs, _ = torch_model.infer(image_from_bytes(photo_bytes(), torch_model.info.preprocessing,
                                                  40_000_000)[None])
    assert out["prediction"] == torch_model.class_names[int(probs[0].argmax())]


def test_gunicorn_workers_on_onnx_do_not_map_torch(exported, start_api):
    model, _, _ = exported
    api = start_api(model, workers=2)
    assert requests.get(api.url + "/model", timeout=10).json()["runtime"] == "onnx"
    r = requests.post(api.url + "/predict", data=photo_bytes(),
                      headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200
    master = api.proc.pid
    children = open(f"/proc/{master}/task/{master}/children").read().split()
    workers = [int(c) for c in children]
    assert len(workers) == 2
    for pid in workers:
        maps = open(f"/proc/{pid}/maps").read()
        assert "onnxruntime" in maps and "libtorch" not in maps


def _stale(tmp_path, exported):
    """An export of another model file, beside this one."""
    other = _mobilenet(tmp_path / "food11-v2.pth", seed=2)
    shutil.copy(exported[1], onnx_path_for(other))
    return other


@pytest.mark.parametrize(
    "case,words",
    [
        ("missing", ["no ONNX export", "export-onnx --model"]),
        ("garbage", ["not a readable ONNX file", "export-onnx again"]),
        ("stale", ["exported from another model file", "export-onnx --model"]),
    ],
)
def test_runtime_onnx_refuses_a_bad_export_at_start_up_in_one_line(case, words, tmp_path,
                                                                   exported):
    if case == "stale":
        model = _stale(tmp_path, exported)
    else:
        model = _mobilenet(tmp_path / "food11.pth", seed=3)
        if case == "garbage":
            onnx_path_for(model).write_bytes(b"not onnx at all" * 50)
    res = run_cli("serve-api", "--port", str(free_port()), "--model", str(model),
                  "--device", "cpu", "--runtime", "onnx")
    assert_one_line_usage_error(res, "cannot serve this model", *words)


def test_runtime_auto_serves_a_stale_export_with_torch_and_says_why(tmp_path, exported, caplog):
    model = _stale(tmp_path, exported)
    with caplog.at_level("WARNING"):
        served = load_for_serving(model, runtime="auto", device="cpu", threads=1)
    assert served.info.runtime == "torch"
    assert "exported from another model file" in caplog.text


def test_runtime_onnx_on_cuda_is_refused(exported):
    with pytest.raises(ModelLoadError, match="runs on CPU only"):
        load_for_serving(exported[0], runtime="onnx", device="cuda", threads=1)


@pytest.mark.parametrize(
    "args,words",
    [
        (["--model", "/nonexistent/food11.pth"], ["/nonexistent/food11.pth", "does not exist"]),
        (["--model", "{dir}"], ["directory"]),
        (["--model", "{garbage}"], ["export-onnx", "corrupt"]),
        ([], ["--model"]),
        (["--model", "{garbage}", "--frobnicate"], ["--frobnicate"]),
    ],
    ids=["missing", "directory", "garbage", "no-model", "unknown-option"],
)
def test_export_onnx_bad_arguments(args, words, tmp_path):
    garbage = tmp_path / "food11.pth"
    garbage.write_bytes(b"\x80\x02this is not a model" * 100)
    args = [a.format(dir=tmp_path, garbage=garbage) for a in args]
    assert_one_line_usage_error(run_cli("export-onnx", *args), *words)
    assert not onnx_path_for(garbage).exists()


def test_export_onnx_command_writes_and_reports(tmp_path):
    model = _mobilenet(tmp_path / "food11.pth", seed=4)
    res = run_cli("export-onnx", "--model", str(model), timeout=180)
    assert res.returncode == 0, res.stderr
    assert f"wrote {onnx_path_for(model)}" in res.stdout and "top-1 identical" in res.stdout
    assert load_onnx(model).info.runtime == "onnx"


@pytest.mark.parametrize("threads", [1, 2])
def test_sessions_do_not_spin_between_forward_passes(exported, threads):
    """With two intra-op threads a spinning pool took the core another request needed
    (bench_api's onnx-intra2: 45 against 67 req/s at c=16)."""
    model = load_onnx(exported[0], threads=threads)
    opts = model.session.get_session_options()
    assert opts.intra_op_num_threads == threads
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_lone_forward_pass_runs_on_the_solo_session_with_the_same_answers(exported):
    """solo_threads=2: a second session of the same export on two intra-op threads (not
    spinning either), giving what the one-thread session gives."""
    plain = load_onnx(exported[0])
    model = load_onnx(exported[0], solo_threads=2)
    assert plain.solo is None
    opts = model.solo.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert model.session.get_session_options().intra_op_num_threads == 1
    images = check_images(224, n=3, seed=11)
    model.idle_core = lambda: True  # whatever else this machine runs now
    before = model.solo_runs
    got_p, got_f = model.infer(images)
    want_p, want_f = plain.infer(images)
    assert model.solo_runs == before + 1
    assert (got_p.argmax(1) == want_p.argmax(1)).all()
    assert np.abs(got_p - want_p).max() <= 1e-6
    assert np.abs(got_f - want_f).max() <= 1e-5 * np.abs(want_f).max()


@pytest.mark.parametrize(("threads", "solo_threads"), [(1, 0), (1, 1), (2, 2)])
def test_no_solo_session_unless_it_has_more_threads(exported, threads, solo_threads):
    model = load_onnx(exported[0], threads=threads, solo_threads=solo_threads)
    assert model.solo is None
    model.infer(check_images(224, n=1, seed=3))
    assert model.solo_runs == 0


def test_a_forward_pass_that_starts_while_another_runs_keeps_one_thread(exported):
    """The second of two concurrent forward passes takes the one-thread session, and once
    both are done a lone one takes the solo session again. The sessions are wrapped only
    to hold the first pass inside its run and to record which session ran."""
    import threading

    model = load_onnx(exported[0], solo_threads=2)
    model.idle_core = lambda: True  # whatever else this machine runs now
    used, inside, release = [], threading.Event(), threading.Event()

    class Held:
        def __init__(self, name, session, hold):
            self.name, self.session, self.hold = name, session, hold

        def run(self, outputs, feed):
            used.append(self.name)
            if self.hold:
                inside.set()
                assert release.wait(30)
            return self.session.run(outputs, feed)

    before = model.solo_runs
    model.solo = Held("solo", model.solo, hold=True)
    model.session = Held("one-thread", model.session, hold=False)
    image = check_images(224, n=1, seed=5)
    first = threading.Thread(target=model.infer, args=(image,))
    first.start()
    try:
        assert inside.wait(30)
        model.infer(image)  # while the first is inside its run
    finally:
        release.set()
        first.join(30)
    model.solo.hold = False
    model.infer(image)
    assert used == ["solo", "one-thread", "solo"]
    assert model.solo_runs == before + 2


def test_a_lone_forward_pass_keeps_one_thread_when_no_core_is_idle(exported):
    """Alone in its process but not on the host (the other worker or instance is busy):
    the one-thread session."""
    model = load_onnx(exported[0], solo_threads=2)
    model.idle_core = lambda: False
    before = model.solo_runs
    model.infer(check_images(224, n=1, seed=6))
    assert model.solo_runs == before


@pytest.mark.parametrize(("text", "cores", "idle"), [
    (b"0.50 0.40 0.30 1/512 1234\n", 2, True),     # only the caller runs
    (b"0.90 0.80 0.70 2/512 1234\n", 2, True),     # and one other thread, such as its event loop
    (b"1.90 1.80 1.70 3/512 1234\n", 2, False),    # every core is taken
    (b"3.10 2.00 1.00 5/640 99\n", 8, True),
    (b"7.10 6.00 5.00 9/640 99\n", 8, False),
    (b"", 2, True),                                 # unreadable: every core counts as free
    (b"garbage", 2, True),
])
def test_idle_core_reads_the_runnable_threads_of_the_host(tmp_path, text, cores, idle):
    from app_api.inference import IdleCore

    loadavg = tmp_path / "loadavg"
    loadavg.write_bytes(text)
    probe = IdleCore(str(loadavg))
    probe.cores = cores
    assert probe() is idle


def test_idle_core_on_this_host_counts_the_caller_and_a_missing_file_means_idle(tmp_path):
    from app_api.inference import IdleCore, runnable_threads

    with open("/proc/loadavg", "rb") as fh:
        assert runnable_threads(fh.read()) >= 1  # the reading thread itself runs
    assert IdleCore(str(tmp_path / "missing"))() is True
