"""The controller's unit and settings file as rendered: `systemd-analyze verify` clean,
exposure below 4.0 (offline `systemd-analyze security`), and the rendered settings file
accepted by the controller's own validation."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gourmetgram.canary.analysis_settings import AnalysisSettings, load_settings
from gourmetgram.host.layout import host_layout
from gourmetgram.host.render import render
from gourmetgram.host.stack import load_stack

UNIT = "gourmetgram-canary-controller.service"
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def layout_data(tmp_path: Path) -> dict[str, str]:
    """The host layout's template data, with a venv whose `gourmetgram` exists, since
    verify checks ExecStart."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "gourmetgram"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return host_layout({"GOURMETGRAM_VENV_DIR": str(venv)}).template_data()


@pytest.fixture
def rendered(tmp_path) -> Path:
    data = {**load_stack().template_data(), "layout": layout_data(tmp_path)}
    out = tmp_path / "units"
    out.mkdir()
    (out / UNIT).write_text(render(f"systemd/{UNIT}.j2", data))
    (out / "canary-analysis.env").write_text(render("systemd/canary-analysis.env.j2", data))
    return out


@needs_analyze
def test_verify_is_clean(rendered):
    out = subprocess.run(["systemd-analyze", "verify", str(rendered / UNIT)], capture_output=True,
                         text=True, timeout=60, cwd=rendered)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stderr


@needs_analyze
def test_security_exposure_below_4(rendered):
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", UNIT],
                         capture_output=True, text=True, timeout=60, cwd=rendered)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) < 4.0, out.stdout


def test_unit_is_always_on_and_runs_the_controller(rendered):
    """Enabled by the deploy (WantedBy), restarted whatever ends it: idle between
    rollouts, so its scrape target is up on a fresh deploy."""
    text = (rendered / UNIT).read_text()
    assert re.search(r"^ExecStart=\S+/gourmetgram canary run$", text, re.M)
    assert "Restart=always" in text and "WantedBy=multi-user.target" in text
    assert "NoNewPrivileges=yes" in text
    assert "ProtectSystem=strict" in text and "IPAddressDeny=any" in text


def test_rendered_settings_file_is_valid(rendered):
    s = load_settings(rendered / "canary-analysis.env")
    assert s.prometheus_url == "http://127.0.0.1:9090"
    assert s.metrics_host == "127.0.0.1" and str(s.state_dir).endswith("canary-analysis")
    assert s.metrics_port == load_stack().canary_analysis_port


def test_settings_default_port_is_the_inventory_default():
    """`gourmetgram canary run` without the env file serves where Prometheus scrapes."""
    assert AnalysisSettings().metrics_port == load_stack().canary_analysis_port


def test_settings_file_takes_addresses_from_the_stack_data(tmp_path):
    """One source: the port Prometheus scrapes (job canary-analysis) is the port the
    controller is told to serve on."""
    from gourmetgram.host.configs import render_canary_analysis_env
    from gourmetgram.host.layout import host_layout

    stack = load_stack({"bind_address": "10.0.0.5", "prometheus_port": 19090,
                        "canary_analysis_port": 19310})
    env = tmp_path / "canary-analysis.env"
    env.write_text(render_canary_analysis_env(
        stack, host_layout({"GOURMETGRAM_STATE_DIR": str(tmp_path / "state")})))
    s = load_settings(env)
    assert (s.prometheus_url, s.metrics_host, s.metrics_port) == (
        "http://10.0.0.5:19090", "10.0.0.5", 19310)
    assert s.state_dir == tmp_path / "state" / "canary-analysis"
