"""Bad inventory data is refused, naming the key, before anything on a host changes:
the pure validation, and the real ``pyinfra ... deploy.py`` run stopping at it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gourmetgram.deploy.plan import inventory_from_host_data
from gourmetgram.host.stack import StackDataError, load_stack
from tests.procs import REPO_ROOT, child_env

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))


def _data(**kw):
    return {**load_stack().model_dump(), **kw}


@pytest.mark.parametrize("key, value, message", [
    ("canary_wieght", 10, "canary_wieght: unknown key"),
    ("canary_weight", 101, "canary_weight"),
    ("canary_weight", -1, "canary_weight"),
    ("canary_weight", "ten", "canary_weight"),
    ("torch_build", "rocm", "torch_build"),
    ("nvidia_gpu", "amd", "nvidia_gpu"),
    ("feedback_sample_rate", 1.5, "feedback_sample_rate"),
    ("feedback_low_confidence_below", 0, "feedback_low_confidence_below"),
    ("feedback_db_url", "postgresql://gg:secret@db/gg", "feedback_db_url"),
    ("feedback_db_url", "mysql://db/gg", "feedback_db_url"),
    ("review_password_file", "review-password", "review_password_file"),
    ("pip_index_url", "pypi.example.org/simple", "pip_index_url"),
    ("pip_find_links", ["wheels"], "pip_find_links"),
    ("pip_cert", "ca.pem", "pip_cert"),
    ("bind_address", "0.0.0.0", "bind_address"),
    ("roles", ["nginx", "docker"], "roles"),
    ("api_ports", {"production": 8000}, "api_ports"),
    ("overwrite_host", ["canary_wieght"], "overwrite_host: unknown keys"),
    ("node_textfile_dir", "/x", "node_textfile_dir: unknown key"),
])
def test_bad_values_are_refused(key, value, message):
    with pytest.raises(StackDataError, match=message):
        inventory_from_host_data(_data(**{key: value}))


def test_missing_model_file_is_refused(tmp_path):
    models = {"production": {"path": str(tmp_path / "nope.pth"), "version": "v1"},
              "canary": {"path": "", "version": ""}}
    with pytest.raises(StackDataError, match="models.production.path: no model file"):
        inventory_from_host_data(_data(models=models))


def test_missing_drift_folder_is_refused(tmp_path):
    with pytest.raises(StackDataError, match="drift_reference_images"):
        inventory_from_host_data(_data(drift_reference_images=str(tmp_path / "none")))
    cfg = inventory_from_host_data(_data(drift_reference_images="https://example.org/food11.zip"))
    assert cfg.deploy.drift_reference_images.startswith("https://")


def test_connector_data_is_not_stack_data():
    cfg = inventory_from_host_data(_data(ssh_port=2222, ssh_user="cc", _sudo=True,
                                        gourmetgram_local_target="local"))
    assert cfg.stack.canary_weight == 0


def test_command_line_strings_are_parsed():
    cfg = inventory_from_host_data(_data(canary_weight="25", roles="nginx,prometheus",
                                        pip_find_links="/a /b"))
    assert (cfg.stack.canary_weight, cfg.deploy.roles, cfg.deploy.pip_find_links) == (
        25, ["nginx", "prometheus"], ["/a", "/b"])


@pytest.mark.parametrize("arg, message", [
    ("canary_weight=150", "canary_weight: Input should be less than or equal to 100"),
    ("canary_wieght=10", "canary_wieght: unknown key"),
    ('models={"production": {"path": "/no/such/model.pth"}, "canary": {}}', "no model file"),
    ("models={production:", "models: Value error, not valid JSON"),
])
def test_pyinfra_stops_before_any_operation(arg, message):
    """The real CLI against @local: it stops while loading deploy.py, so no operation
    (not even a fact beyond the connection) runs; --dry on top as a second guard."""
    res = subprocess.run([PYINFRA, "@local", "deploy.py", "--dry", "-y", "--data", arg],
                         capture_output=True, text=True, cwd=REPO_ROOT, env=child_env(), timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert message in out and "nothing was changed" in out, out
    assert "Starting operation" not in out and "Detected changes" not in out
