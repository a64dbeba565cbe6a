"""An exclusive advisory lock on a file, held for a ``with`` block (flock: released by
the kernel if the holder dies, so a crash never leaves it locked)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Creates ``path`` if missing, then blocks until this process holds it alone."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
