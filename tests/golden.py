"""Golden-file comparison for rendered configs: ``UPDATE_GOLDEN=1 pytest ...`` rewrites
the files; review the diff before committing it."""

from __future__ import annotations

import os
from pathlib import Path


def check_golden(path: Path, text: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs: run with UPDATE_GOLDEN=1 and review"
