"""A throwaway PostgreSQL cluster from Debian's postgresql package: initdb into a
temporary folder, pg_ctl start on a free loopback port (as the ``postgres`` user
when the tests run as root, since PostgreSQL refuses root), pg_ctl stop at the end."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from tests.procs import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    return (PG_BIN / "initdb").exists()


class Cluster:
    def __init__(self, tmp: Path):
        self.dir = tmp / "pg"
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.dir.mkdir(mode=0o700)
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            shutil.chown(self.dir, pw.pw_uid, pw.pw_gid)
            for parent in [tmp, *tmp.parents]:  # postgres must reach its folder
                parent.chmod(parent.stat().st_mode | 0o001)
        self.user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        cmd = [str(PG_BIN / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories="
                  f"{self.dir}", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
