"""``gourmetgram serve-api`` and ``build-demo-model`` on bad arguments: exit code 2 and
one line that names the problem, nothing started; a bad model file stops start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.procs import REPO_ROOT, child_env, free_port


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90):
    return subprocess.run(
        [sys.executable, "-m", "gourmetgram", *args], capture_output=True, text=True,
        env=child_env(**(env or {})), cwd=REPO_ROOT, timeout=timeout,
    )


def assert_one_line_usage_error(res, *words: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for w in words:
        assert w in lines[0]
    assert res.stdout == ""


@pytest.mark.parametrize(
    "args,env,words",
    [
        (["--port", "abc"], {}, ["--port", "abc"]),
        (["--port", "0"], {}, ["port"]),
        (["--port", "70000"], {}, ["port"]),
        ([], {"FOOD11_PORT": "http"}, ["port"]),
        (["--device", "gpu"], {}, ["--device", "gpu"]),
        ([], {"FOOD11_DEVICE": "tpu"}, ["device"]),
        (["--workers", "0"], {}, ["workers"]),
        (["--variant", "Bad Name!"], {}, ["variant"]),
        (["--model", "/nonexistent/food11.pth"], {}, ["/nonexistent/food11.pth", "does not exist"]),
        (["--max-batch", "-1"], {}, ["max_batch"]),
        ([], {"FOOD11_SOLO_THREADS": "-2"}, ["solo_threads"]),
        (["--frobnicate"], {}, ["--frobnicate"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_serve_api_bad_arguments(args, env, words, tmp_path):
    port = [] if any(a.startswith("--port") for a in args) or "FOOD11_PORT" in env else [
        "--port", str(free_port())]
    res = run_cli("serve-api", *port, *args, env=env, timeout=60)
    assert_one_line_usage_error(res, *words)


def test_serve_api_refuses_a_bad_model_at_start_up(tmp_path):
    bad = tmp_path / "food11.pth"
    bad.write_bytes(b"\x80\x02this is not a model" * 100)
    res = run_cli("serve-api", "--port", str(free_port()), "--model", str(bad), "--device", "cpu")
    assert_one_line_usage_error(res, "cannot serve this model", str(bad), "corrupt")


def test_serve_api_refuses_a_pickle_without_opt_in_and_says_how(tmp_path):
    from app_api.model import build_mobilenet_v2

    path = tmp_path / "food11.pth"
    torch.save(build_mobilenet_v2(), path)
    res = run_cli("serve-api", "--port", str(free_port()), "--model", str(path), "--device", "cpu")
    assert_one_line_usage_error(res, "--allow-pickle", "FOOD11_ALLOW_PICKLE=1")


def test_build_demo_model_out_is_a_directory(tmp_path):
    assert_one_line_usage_error(run_cli("build-demo-model", "--out", str(tmp_path)), "directory")


def test_build_demo_model_out_in_missing_folder(tmp_path):
    res = run_cli("build-demo-model", "--out", str(tmp_path / "no" / "such" / "m.pt"))
    assert_one_line_usage_error(res, "does not exist")
    assert not (tmp_path / "no").exists()


def test_build_demo_model_missing_out():
    assert_one_line_usage_error(run_cli("build-demo-model"), "--out")


def test_unknown_command():
    assert_one_line_usage_error(run_cli("serve-apii"), "serve-apii")
