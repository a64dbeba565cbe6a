"""Errors every subcommand shares."""


class UsageError(Exception):
    """Bad arguments or settings: one line on stderr and exit code 2, nothing changed."""
