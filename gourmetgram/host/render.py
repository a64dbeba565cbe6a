"""The one render function for every host-specific config file.

Templates live in the role folders (``nginx/``, ``systemd/``, ``prometheus/``,
``grafana/``) as ``name.j2``; data comes from the inventory (``group_data/all.py``,
validated by :mod:`gourmetgram.host.stack`). ``StrictUndefined`` makes a missing key an
error at render time instead of an empty string in a live config. The deploy, the
on-host ``gourmetgram canary`` commands and the golden-file tests all call this.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

REPO_ROOT = Path(__file__).resolve().parents[2]
# The role folders' files: the wheel carries them as gourmetgram/roles/<role>/ (setup.py);
# a source checkout has them at its top level.
ROLE_FILES = Path(__file__).resolve().parents[1] / "roles"
TEMPLATE_ROOT = ROLE_FILES if ROLE_FILES.is_dir() else REPO_ROOT


@lru_cache(maxsize=8)
def _environment(root: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(root),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, data: Mapping, root: Path | None = None) -> str:
    """Renders ``template`` (a path under ``root``, e.g. ``nginx/site.conf.j2``)."""
    return _environment(str(root or TEMPLATE_ROOT)).get_template(template).render(**data)
