"""Command-line options over a settings object read from the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable

from gourmetgram.errors import UsageError


def settings_from_options(args: argparse.Namespace, option_env: Iterable[tuple[str, str]], settings_cls):
    """Options given on the command line override their environment variables; the
    result is validated as one object, and a bad value is a usage error naming it."""
    from pydantic import ValidationError

    for opt, env in option_env:
        value = getattr(args, opt, None)
        if value is not None:
            os.environ[env] = str(value)
    try:
        return settings_cls()
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        raise UsageError(f"bad setting {where}: {err['msg']}") from None
