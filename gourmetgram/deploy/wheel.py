"""The project as a wheel, built on the controller and installed into the host's venv
(nothing of the checkout is copied to the host, nothing runs group_data there)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gourmetgram.host.render import REPO_ROOT

# What the wheel is built from; setup.py puts the role folders' data under gourmetgram/roles/.
SOURCES = ("app_api", "app_web", "gourmetgram", "nginx", "systemd", "prometheus", "grafana",
           "pyproject.toml", "setup.py", "README.md")
# Fixed zip timestamps: the same code gives the same wheel, so a re-deploy uploads nothing.
SOURCE_DATE_EPOCH = "315532800"


class WheelError(RuntimeError):
    pass


def build_wheel(out_dir: Path) -> Path:
    """Builds ``gourmetgram-*.whl`` from a clean copy of the sources (no stale build/
    folder can leak into it) into ``out_dir`` and returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    with tempfile.TemporaryDirectory(prefix="gourmetgram-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            path = REPO_ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=ignore)
            else:
                shutil.copy2(path, src / name)
        dist = Path(tmp) / "dist"
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
             "-w", str(dist), str(src)],
            capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},
        )
        wheels = sorted(dist.glob("gourmetgram-*.whl"))
        if res.returncode != 0 or len(wheels) != 1:
            raise WheelError(f"building the gourmetgram wheel failed: {res.stderr.strip()[-2000:]}")
        dest = out_dir / wheels[0].name
        shutil.copyfile(wheels[0], dest)
    return dest


@functools.lru_cache(maxsize=1)
def controller_wheel() -> Path:
    """The wheel of this checkout, built once per deploy run into the ignored var/."""
    return build_wheel(REPO_ROOT / "var" / "wheels")
