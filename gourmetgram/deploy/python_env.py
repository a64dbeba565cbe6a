"""The host venv: pinned requirements, pip sources, and the check of what is missing."""

from __future__ import annotations

import tomllib

from gourmetgram.host.render import REPO_ROOT
from gourmetgram.host.stack import DeploySettings

TORCH_PACKAGES = ("torch", "torchvision")

TORCH_OP_NAMES = {
    "cpu": "Install torch (CPU build)",
    "cuda": "Install torch (CUDA build)",
    "any": "Install torch (the pip sources' build: torch_cpu_index_url is empty)",
}

# The venv check runs this with the venv's python: prints the requirements not met.
VENV_CHECK = r"""
import sys
from importlib.metadata import version, PackageNotFoundError
flavour = sys.argv[1]
for req in sys.argv[2:]:
    name, _, ver = req.partition("==")
    name = name.split("[")[0]  # "psycopg[binary]" is installed as "psycopg"
    try:
        have = version(name)
    except PackageNotFoundError:
        print(req); continue
    public, _, local = have.partition("+")
    wrong_build = name == "torch" and flavour != "any" and (flavour == "cpu") != (local == "cpu")
    if public != ver or wrong_build:
        print(req)
"""


def pinned_requirements() -> tuple[list[str], list[str]]:
    """(torch pins, everything else) from pyproject.toml's dependencies."""
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = [d for d in deps if d.split("==")[0].strip() in TORCH_PACKAGES]
    rest = [d for d in deps if d not in torch]
    return torch, rest


def pip_options(settings: DeploySettings, torch_build: str | None = None) -> list[str]:
    """pip arguments for the host; with ``torch_build='cpu'`` and a CPU index, torch
    comes from that index only (PyPI's Linux wheels are the CUDA build)."""
    opts: list[str] = []
    if settings.pip_cert:
        opts += ["--cert", settings.pip_cert]
    if torch_build == "cpu" and settings.torch_cpu_index_url:
        return opts + ["--index-url", settings.torch_cpu_index_url]
    if settings.pip_index_url:
        opts += ["--index-url", settings.pip_index_url]
    for url in settings.pip_extra_index_urls:
        opts += ["--extra-index-url", url]
    for link in settings.pip_find_links:
        opts += ["--find-links", link]
    return opts


def torch_flavour(settings: DeploySettings, torch_build: str) -> str:
    """What the venv's torch must be: ``cpu`` (a ``+cpu`` build from the CPU index),
    ``cuda`` (not ``+cpu``), or ``any`` (whatever the pip sources serve: the CPU build
    was asked for but ``torch_cpu_index_url`` is empty)."""
    if torch_build == "cpu":
        return "cpu" if settings.torch_cpu_index_url else "any"
    return "cuda"

