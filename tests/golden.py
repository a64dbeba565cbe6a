"""Golden-file comparison for rendered configs: ``UPDATE_GOLDEN=1 pytest ...`` writes
the files; review the diff before committing it. A missing golden file fails (it would
otherwise be written by the run that should have been checked against it)."""

from __future__ import annotations

import os
from pathlib import Path


def check_golden(path: Path, text: str) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), f"{path} differs: run with UPDATE_GOLDEN=1 and review"
