"""Operation helpers the roles share (pyinfra; imported only inside a deploy)."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

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


def hardening_dropin(unit: str, text: str):
    """Installs a confining drop-in for one of Debian's units; the caller reloads systemd
    and restarts the service when the returned operation changed something."""
    directory = f"/etc/systemd/system/{unit}.service.d"
    files.directory(name=f"Create {directory}", path=directory, mode="755")
    return put_text(f"Confine {unit}.service (systemd drop-in)", text,
                    f"{directory}/gourmetgram-hardening.conf", mode="644")


def generated_secret(what: str, path: str) -> None:
    """A random password generated on the host into a root-only file (never a default),
    once: a later run keeps it."""
    if not host.get_fact(File, path=path):
        server.shell(
            name=f"Generate {what} into {path} (root only)",
            commands=[f"test -s {path} || (umask 077 && head -c 32 /dev/urandom "
                      f"| base64 | tr -d '/+=\\n' > {path})"],
        )
    files.file(name=f"Keep {what} root-only", path=path, user="root", group="root", mode="600",
               present=True)
