"""Operation helpers the roles share (pyinfra; imported only inside a deploy)."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

POLICY_RC_D = ("#!/bin/sh\n# GourmetGram deploy: packages being installed; services start once "
               "configured.\nexit 101\n")


def install_stopped(what: str, packages: list[str]):
    """apt-installs ``packages`` without letting their maintainer scripts start the
    services (Debian's would listen on all interfaces before we set their addresses).
    The policy-rc.d guard is only planned when something is missing, so a second run
    stays change-free."""
    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in packages if p not in installed]
    if missing:
        files.put(name=f"{what}: keep services stopped while installing (policy-rc.d)",
                  src=StringIO(POLICY_RC_D), dest="/usr/sbin/policy-rc.d", mode="755")
    op = apt.packages(
        name=f"{what}: install {', '.join(packages)}",
        packages=packages,
        update=bool(missing),
        cache_time=3600,
        extra_install_args="--no-install-recommends",
    )
    if missing:
        files.file(name=f"{what}: allow services to start again", path="/usr/sbin/policy-rc.d",
                   present=False)
    return op


def put_text(name: str, text: str, dest: str, **kw):
    """files.put of rendered text."""
    return files.put(name=name, src=StringIO(text), dest=dest, **kw)
