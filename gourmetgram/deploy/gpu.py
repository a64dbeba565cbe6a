"""The GPU decision as a function of inventory data and facts (tested without a host)."""

from __future__ import annotations

from dataclasses import dataclass

from gourmetgram.host.stack import DeploySettings, StackDataError

NVIDIA_VENDOR = "0x10de"


@dataclass(frozen=True)
class GpuFacts:
    nvidia_devices: tuple[str, ...]  # PCI addresses of NVIDIA display/3D controllers
    driver_loaded: bool  # nvidia-smi answers
    distro: str  # "ubuntu", "debian", ...


@dataclass(frozen=True)
class GpuPlan:
    torch_build: str  # "cuda" or "cpu"
    install_driver: bool
    driver_packages: tuple[str, ...]
    reason: str


def parse_pci(output: str) -> tuple[str, ...]:
    """Lines ``ADDRESS VENDOR CLASS`` (sysfs values) -> NVIDIA GPUs' addresses."""
    found = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].lower() == NVIDIA_VENDOR and parts[2].lower().startswith("0x03"):
            found.append(parts[0])
    return tuple(found)


def plan_gpu(settings: DeploySettings, facts: GpuFacts) -> GpuPlan:
    if settings.nvidia_gpu == "no":
        has_gpu, why = False, "nvidia_gpu='no' in the inventory"
    elif settings.nvidia_gpu == "yes":
        has_gpu, why = True, "nvidia_gpu='yes' in the inventory"
    elif facts.nvidia_devices:
        has_gpu, why = True, f"NVIDIA GPU at {', '.join(facts.nvidia_devices)}"
    else:
        has_gpu, why = False, "no NVIDIA GPU found"
    build = settings.torch_build if settings.torch_build != "auto" else ("cuda" if has_gpu else "cpu")
    install = has_gpu and not facts.driver_loaded
    packages: tuple[str, ...] = ()
    if install:
        if facts.distro == "ubuntu":
            packages = ("ubuntu-drivers-common",)
        elif facts.distro == "debian":
            packages = ("nvidia-driver", "firmware-misc-nonfree", "linux-headers-amd64")
        else:
            raise StackDataError(f"NVIDIA driver install: unsupported distribution {facts.distro!r}")
    return GpuPlan(build, install, packages, why)
