"""The model files' identity (sha256), in a module without torch so the deploy and the
``gourmetgram canary`` commands can hash a model without importing it."""

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
