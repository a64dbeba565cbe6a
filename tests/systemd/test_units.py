"""The rendered unit files: `systemd-analyze verify` clean, and hardened (offline
`systemd-analyze security` exposure below 4.0). Running them under a booted systemd
is the deploy's end-to-end test."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gourmetgram.host.configs import DAEMONS, render_daemon_hardening, render_units
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


def limits(text: str) -> dict[str, int]:
    """MemoryHigh/MemoryMax in MiB and TasksMax of a rendered unit."""
    found = dict(re.findall(r"^(MemoryHigh|MemoryMax|TasksMax)=(\d+)M?$", text, re.M))
    return {k: int(v) for k, v in found.items()}


# Measured peaks (docs/canary.md, "Memory and task limits").
API_WORKER_PEAK_MIB = 960
WEB_MEASURED_MIB = 38 + 2 * 64


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_api_limits_scale_with_workers_and_clear_the_measured_peak(device):
    by_workers = {w: limits(render_units(load_stack({"api_device": device, "api_workers": w}),
                                         host_layout({}))["food11-api@.service"])
                  for w in (1, 2, 4)}
    for w, lim in by_workers.items():
        assert set(lim) == {"MemoryHigh", "MemoryMax", "TasksMax"}, lim
        assert lim["MemoryHigh"] < lim["MemoryMax"]
        # Every worker at its measured peak plus the master fits under MemoryHigh.
        assert w * API_WORKER_PEAK_MIB + 64 < lim["MemoryHigh"], (w, lim)
    step = by_workers[2]["MemoryMax"] - by_workers[1]["MemoryMax"]
    assert by_workers[4]["MemoryMax"] - by_workers[2]["MemoryMax"] == 2 * step
    assert step >= 1.5 * API_WORKER_PEAK_MIB
    assert by_workers[2]["TasksMax"] > by_workers[1]["TasksMax"]


def test_web_and_controller_limits():
    units = render_units(load_stack(), host_layout({}))
    web = limits(units["gourmetgram-web.service"])
    # The measured processes plus the pending photos' tmpfs (256 MB) fit under MemoryHigh.
    assert WEB_MEASURED_MIB + 256 < web["MemoryHigh"] < web["MemoryMax"], web
    controller = limits(units["gourmetgram-canary-controller.service"])
    assert 59 < controller["MemoryHigh"] < controller["MemoryMax"] and controller["TasksMax"] >= 16


@pytest.fixture
def daemons(tmp_path) -> Path:
    """Each of Debian's daemons as a bare unit (its user and command, no confinement of
    its own: the worst case of what Debian ships) with our drop-in beside it."""
    users = {"mtail": "mtail"}
    for unit, text in render_daemon_hardening(load_stack(), host_layout({})).items():
        (tmp_path / f"{unit}.service").write_text(
            f"[Service]\nUser={users.get(unit, 'prometheus')}\nExecStart=/usr/bin/{unit}\n")
        (tmp_path / f"{unit}.service.d").mkdir()
        (tmp_path / f"{unit}.service.d" / "gourmetgram-hardening.conf").write_text(text)
    return tmp_path


def exposure(cwd: Path, unit: str) -> float:
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", unit],
                         capture_output=True, text=True, timeout=60, cwd=cwd)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


@pytest.mark.parametrize("unit", sorted(DAEMONS))
def test_daemon_dropins_bring_debians_units_below_4(daemons, unit):
    assert exposure(daemons, f"{unit}.service") < 4.0
    # The check can fail: without the drop-in the bare unit is UNSAFE.
    shutil.rmtree(daemons / f"{unit}.service.d")
    assert exposure(daemons, f"{unit}.service") > 9.0


def test_daemon_dropins_keep_what_each_daemon_needs():
    d = render_daemon_hardening(load_stack({"bind_address": "10.0.0.5"}), host_layout({}))
    # process-exporter reads every process's /proc/<pid>; the others see their own only.
    assert "ProtectProc=" not in d["prometheus-process-exporter"]
    assert all("ProtectProc=invisible" in text for u, text in d.items() if u != "prometheus-process-exporter")
    assert "AF_NETLINK" in d["prometheus-node-exporter"]  # netdev collector
    assert "ReadWritePaths=/var/lib/prometheus/metrics2" in d["prometheus"]
    assert "ReadWritePaths=/var/lib/prometheus/alertmanager" in d["prometheus-alertmanager"]
    # Alertmanager may notify a webhook elsewhere; the rest talk to this host only.
    assert "IPAddressDeny=" not in d["prometheus-alertmanager"]
    for unit in set(d) - {"prometheus-alertmanager"}:
        assert "IPAddressDeny=any" in d[unit] and "IPAddressAllow=10.0.0.5" in d[unit], unit
