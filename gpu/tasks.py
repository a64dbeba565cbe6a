"""GPU role: the NVIDIA driver where an NVIDIA GPU is found (or ``nvidia_gpu='yes'``).

The decision is :func:`gourmetgram.deploy.gpu.plan_gpu` (tested without a host); the
torch build that goes with it is installed by the install role.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import logger
from pyinfra.operations import apt, files, server

from gourmetgram.deploy.plan import HostPlan


def apply(plan: HostPlan) -> None:
    gpu = plan.gpu
    logger.info(f"{plan.name}: torch {gpu.torch_build} build ({gpu.reason})")
    if not gpu.install_driver:
        return
    if gpu.driver_packages == ("ubuntu-drivers-common",):
        apt.packages(
            name="Install ubuntu-drivers (picks the recommended NVIDIA server driver)",
            packages=list(gpu.driver_packages),
            update=True,
            cache_time=3600,
        )
        server.shell(
            name="Install the NVIDIA driver (ubuntu-drivers install --gpgpu)",
            commands=["ubuntu-drivers install --gpgpu"],
        )
    else:
        files.put(
            name="Enable Debian's contrib, non-free and non-free-firmware components",
            src=StringIO(
                "# Written by the GourmetGram deploy: the NVIDIA driver lives in non-free.\n"
                "deb http://deb.debian.org/debian bookworm contrib non-free non-free-firmware\n"
            ),
            dest="/etc/apt/sources.list.d/gourmetgram-nonfree.list",
        )
        apt.packages(
            name="Install the NVIDIA driver (Debian non-free nvidia-driver)",
            packages=list(gpu.driver_packages),
            update=True,
            extra_install_args="--no-install-recommends",
        )
    if plan.deploy.reboot_for_driver:
        server.reboot(name="Reboot to load the NVIDIA driver", delay=10, reboot_timeout=600)
    else:
        logger.warning(
            f"{plan.name}: the NVIDIA driver is installed but not loaded: reboot the host "
            "(or set reboot_for_driver=True) and run the deploy again; the API uses the CPU until then"
        )
