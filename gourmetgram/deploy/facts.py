"""pyinfra facts the deploy plans from: PCI devices, the NVIDIA driver, the venv's
unmet requirements, Python's version, and the host's GourmetGram state."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from gourmetgram.deploy.gpu import parse_pci
from gourmetgram.deploy.python_env import VENV_CHECK


class PciDisplayDevices(FactBase):
    """``ADDRESS VENDOR CLASS`` of each PCI device. ``GOURMETGRAM_SYSFS`` (default
    /sys) lets the tests give a dry run a fake machine's sysfs."""

    def command(self):
        return ('for d in "${GOURMETGRAM_SYSFS:-/sys}"/bus/pci/devices/*; do '
                '[ -r "$d/vendor" ] && echo "${d##*/} $(cat "$d/vendor") $(cat "$d/class")"; '
                "done; true")

    def process(self, output):
        return parse_pci("\n".join(output))


class NvidiaDriverLoaded(FactBase):
    def command(self):
        return "nvidia-smi -L >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output):
        return "yes" in output


class UnmetRequirements(FactBase):
    """Pinned requirements the venv does not satisfy (all of them without a venv)."""

    def command(self, venv, flavour, requirements):
        reqs = " ".join(shlex.quote(r) for r in requirements)
        return (f"if [ -x {venv}/bin/python ]; then {venv}/bin/python -c "
                f"{shlex.quote(VENV_CHECK)} {flavour} {reqs}; "
                f"else printf '%s\\n' {reqs}; fi")

    def process(self, output):
        return [line.strip() for line in output if line.strip()]


class UrlReachable(FactBase):
    """Whether the host can fetch ``url`` within ``timeout`` seconds (curl, else wget,
    else a bare TCP connect to the URL's host and port with bash)."""

    def command(self, url: str, timeout: int = 5):
        return reachability_command(url, timeout)

    def process(self, output):
        return "reachable" in output


def reachability_command(url: str, timeout: int = 5) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    q, t = shlex.quote(url), int(timeout)
    tcp = shlex.quote(f"exec 3<>/dev/tcp/{parts.hostname}/{port}")
    return (f"if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null --max-time {t} {q}; "
            f"elif command -v wget >/dev/null 2>&1; then wget -q -O /dev/null -T {t} -t 1 {q}; "
            f"else timeout {t} bash -c {tcp}; fi >/dev/null 2>&1 "
            "&& echo reachable || echo unreachable")


class PythonVersion(FactBase):
    def command(self):
        return "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"

    def process(self, output):
        return output[0].strip() if output else ""


SECTIONS = ("live", "last_applied", "lock", "rollout")


class HostState(FactBase):
    """The host's live stack.json, the last deploy's last-applied.json, whether a canary
    command holds the canary lock now, and the controller's rollout state. Read in
    pyinfra's planning phase, so a conflict stops the run before any operation."""

    def command(self, stack_json: str, last_applied: str, lock_file: str, rollout: str):
        lock = shlex.quote(lock_file)
        return "; ".join([
            "echo '@@live'", f"cat {shlex.quote(stack_json)} 2>/dev/null",
            "echo '@@last_applied'", f"cat {shlex.quote(last_applied)} 2>/dev/null",
            "echo '@@lock'",
            f"if [ -e {lock} ] && ! flock -n {lock} true; then echo held; else echo free; fi",
            "echo '@@rollout'", f"cat {shlex.quote(rollout)} 2>/dev/null",
            "true",
        ])

    def process(self, output):
        sections: dict[str, list[str]] = {name: [] for name in SECTIONS}
        current = None
        for line in output:
            if line.startswith("@@") and line[2:] in sections:
                current = line[2:]
            elif current:
                sections[current].append(line)
        return {name: "\n".join(lines) for name, lines in sections.items()}
