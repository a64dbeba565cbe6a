"""The rendered unit files: `systemd-analyze verify` clean, and hardened (offline
`systemd-analyze security` exposure below 4.0). Running them under a booted systemd
is the deploy's end-to-end test."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gourmetgram.host.configs import render_units
from gourmetgram.host.layout import host_layout
from gourmetgram.host.stack import load_stack

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is not installed (scripts/install-test-deps.sh)")


@pytest.fixture(params=["auto", "cpu"])
def units(tmp_path, request) -> Path:
    """Units rendered with a venv whose `gourmetgram` exists (verify checks ExecStart)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "gourmetgram"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    layout = host_layout({"GOURMETGRAM_VENV_DIR": str(venv)})
    out = tmp_path / "units"
    out.mkdir()
    for name, text in render_units(load_stack({"api_device": request.param}), layout).items():
        (out / name).write_text(text)
    # An instance of the template, as systemd would load it.
    shutil.copy(out / "food11-api@.service", out / "food11-api@canary.service")
    return out


def verify(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True,
                          text=True, timeout=60, cwd=paths[0].parent)


@pytest.mark.parametrize("unit", ["food11-api@canary.service", "gourmetgram-web.service"])
def test_systemd_analyze_verify_is_clean(units, unit):
    out = verify(units / unit)
    # verify exits 0 on directives it ignores, so any message is a failure.
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stderr


def test_verify_catches_a_bad_directive(units):
    """The check above can fail: a typo'd value is reported."""
    bad = units / "food11-api@production.service"
    bad.write_text((units / "food11-api@canary.service").read_text().replace(
        "Restart=on-failure", "Restart=sometimes"))
    assert "Restart" in verify(bad).stderr or "restart" in verify(bad).stderr


@pytest.mark.parametrize("unit", ["food11-api@canary.service", "gourmetgram-web.service"])
def test_security_exposure_below_4(units, unit):
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit],
                         capture_output=True, text=True, timeout=60, cwd=units)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) < 4.0, out.stdout


@pytest.mark.parametrize("directive", [
    "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
    "CapabilityBoundingSet=\n", "Restart=on-failure", "StartLimitBurst=", "ExecStartPost=",
    "User=gourmetgram", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
])
def test_units_carry_the_required_directives(units, directive):
    for unit in ("food11-api@canary.service", "gourmetgram-web.service"):
        assert directive in (units / unit).read_text(), (unit, directive)


@pytest.mark.parametrize("device, private", [("cpu", True), ("auto", False), ("cuda", False)])
def test_api_unit_sees_gpu_devices_only_when_it_may_use_them(device, private):
    text = render_units(load_stack({"api_device": device}), host_layout({}))["food11-api@.service"]
    assert ("PrivateDevices=yes" in text) is private
    assert ("DeviceAllow=char-nvidia-frontend rw" in text) is not private
    assert "DevicePolicy=closed" in text


def test_api_unit_reads_one_env_file_per_variant(units):
    text = (units / "food11-api@canary.service").read_text()
    assert "EnvironmentFile=/etc/gourmetgram/food11-api-%i.env" in text
    assert "ExecStartPost=" in text and "/readyz" in text
