"""The GPU decision: an NVIDIA GPU gets the driver and the CUDA torch, any other host
the CPU torch and no driver. Tested as a function of the facts, and by a real
``pyinfra --dry`` run whose PCI fact reads a fake sysfs (``GOURMETGRAM_SYSFS``): the
driver install itself cannot run here (no GPU), so only the plan is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gourmetgram.deploy.gpu import GpuFacts, parse_pci, plan_gpu
from gourmetgram.deploy.python_env import pip_options
from gourmetgram.host.stack import StackDataError, load_inventory
from tests.procs import REPO_ROOT, child_env

PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
GPU = ("0000:00:05.0",)
DEBIAN_DRIVER = ("nvidia-driver", "firmware-misc-nonfree", "linux-headers-amd64")


def _settings(**kw):
    return load_inventory(kw).deploy


def test_parse_pci_finds_only_nvidia_display_devices():
    out = "\n".join([
        "0000:00:01.0 0x8086 0x060000",  # Intel bridge
        "0000:00:05.0 0x10de 0x030200",  # NVIDIA 3D controller
        "0000:00:06.0 0x10de 0x040300",  # NVIDIA audio function
        "0000:00:07.0 0x1af4 0x020000",  # virtio net
        "garbage",
    ])
    assert parse_pci(out) == GPU


# The fact's output on a real GPU VM (Ubuntu 24.04, one H200, virtio devices around it).
REAL_H200 = """0000:00:00.0 0x8086 0x060000
0000:00:01.0 0x1af4 0x018000
0000:00:02.0 0x1af4 0x018000
0000:00:03.0 0x1af4 0x020000
0000:00:04.0 0x1af4 0xffff00
0000:00:05.0 0x1af4 0xffff00
0000:00:06.0 0x10de 0x030200
"""


def test_real_gpu_host_gets_cuda_torch_and_keeps_its_driver():
    devices = parse_pci(REAL_H200)
    assert devices == ("0000:00:06.0",)
    plan = plan_gpu(_settings(), GpuFacts(devices, True, "ubuntu"))
    assert (plan.torch_build, plan.install_driver) == ("cuda", False)


@pytest.mark.parametrize("setting, devices, loaded, distro, build, driver", [
    ("auto", GPU, False, "ubuntu", "cuda", ("ubuntu-drivers-common",)),
    ("auto", GPU, False, "debian", "cuda", DEBIAN_DRIVER),
    ("auto", GPU, True, "ubuntu", "cuda", ()),
    ("auto", (), False, "ubuntu", "cpu", ()),
    ("no", GPU, False, "ubuntu", "cpu", ()),
    ("yes", (), False, "debian", "cuda", DEBIAN_DRIVER),
])
def test_plan(setting, devices, loaded, distro, build, driver):
    plan = plan_gpu(_settings(nvidia_gpu=setting), GpuFacts(devices, loaded, distro))
    assert plan.torch_build == build
    assert plan.install_driver == bool(driver)
    assert plan.driver_packages == driver


def test_torch_build_override_and_unknown_distro():
    cfg = _settings(torch_build="cpu")
    assert plan_gpu(cfg, GpuFacts(GPU, True, "ubuntu")).torch_build == "cpu"
    with pytest.raises(StackDataError, match="unsupported distribution"):
        plan_gpu(_settings(), GpuFacts(GPU, False, "fedora"))


def test_cpu_torch_comes_from_the_cpu_index_only():
    cfg = _settings(pip_extra_index_urls=["https://mirror.example/simple"], pip_cert="/ca.pem")
    assert pip_options(cfg, "cpu") == ["--cert", "/ca.pem", "--index-url", "https://download.pytorch.org/whl/cpu"]
    assert pip_options(cfg, "cuda") == ["--cert", "/ca.pem", "--extra-index-url", "https://mirror.example/simple"]
    no_cpu_index = _settings(torch_cpu_index_url="")
    assert pip_options(no_cpu_index, "cpu") == []


def _dry_run(tmp_path: Path, gpu: bool) -> str:
    sysfs = tmp_path / "sysfs"
    dev = sysfs / "bus/pci/devices/0000:00:05.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x10de\n" if gpu else "0x1af4\n")
    (dev / "class").write_text("0x030200\n" if gpu else "0x020000\n")
    res = subprocess.run(
        [PYINFRA, "@local", "deploy.py", "--dry", "--data", "roles=gpu,install",
         "--data", "torch_cpu_index_url=https://download.pytorch.org/whl/cpu"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
        env=child_env(GOURMETGRAM_SYSFS=str(sysfs)),
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Detected changes" in out, out
    return out


def test_dry_run_with_an_nvidia_gpu_plans_driver_and_cuda_torch(tmp_path):
    out = _dry_run(tmp_path, gpu=True)
    assert "NVIDIA GPU at 0000:00:05.0" in out
    assert "Install the NVIDIA driver" in out
    assert "Install torch (CUDA build)" in out and "CPU build" not in out


def test_dry_run_without_a_gpu_plans_neither(tmp_path):
    out = _dry_run(tmp_path, gpu=False)
    assert "no NVIDIA GPU found" in out
    assert "NVIDIA driver" not in out
    assert "Install torch (CPU build)" in out and "CUDA build" not in out
