"""The ``gourmetgram`` command. Each subcommand is a thin layer over a library module,
so the deploy, the tests and the canary controller call the same code."""

from __future__ import annotations

import argparse
import importlib
import sys

from gourmetgram.errors import UsageError

# Each module registers its subcommands; add a line here for a new group.
COMMAND_MODULES = (
    "gourmetgram.commands.api",
    "gourmetgram.commands.drift",
    "gourmetgram.commands.web",
    "gourmetgram.commands.load",
    "gourmetgram.commands.canary",
    "gourmetgram.commands.smoke",
    "gourmetgram.commands.feedback",
)


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments are one line and exit code 2, like every UsageError (the usage
    summary stays one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="gourmetgram", description="GourmetGram online evaluation stack"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"gourmetgram {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
