"""Moving /api/ traffic between the production and canary model APIs on one host.

The library behind ``gourmetgram canary`` and the automated analysis. Every change
goes the same way: validate the arguments (nothing changes on a bad value), render the
Nginx site from the stack data, check it with ``nginx -t``, swap it in atomically
(keeping the previous file), reload Nginx (never restart) and confirm the reload took,
then record the change: ``stack.json``, the history file, the log (journal) and the
``canary_weight`` metric in node_exporter's textfile folder.

Services are started and reloaded through a :class:`Services` object, so tests run the
same code against their own Nginx master and API processes instead of systemd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests

from app_api.filelock import exclusive
from app_api.hashing import sha256_of
from gourmetgram.host import state as hoststate
from gourmetgram.host.configs import render_api_env, render_site, render_standalone
from gourmetgram.host.layout import HostLayout, host_layout
from gourmetgram.host.stack import VARIANTS, VERSION_PATTERN, StackConfig, StackDataError

log = logging.getLogger("gourmetgram.canary.routing")

SYSLOG_SOCKET = "/dev/log"
READY_TIMEOUT = 180.0
RELOAD_TIMEOUT = 15.0


def setup_logging() -> None:
    """Sends this module's change log to stderr and, where there is one, the journal
    (syslog identifier ``gourmetgram-canary``). Call once from a command or daemon."""
    logger = logging.getLogger("gourmetgram")
    if logger.handlers:
        return
    logger.setLevel(logging.INFO)
    err = logging.StreamHandler()
    err.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(err)
    if os.path.exists(SYSLOG_SOCKET):
        try:
            handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
        except OSError:
            return
        handler.ident = "gourmetgram-canary: "
        logger.addHandler(handler)


class CanaryError(Exception):
    """A refused or failed change; the message says what and what state is left."""


class Services(Protocol):
    """What the canary needs from the service manager."""

    def check_nginx(self) -> None:
        """Tests the whole live Nginx configuration; raises CanaryError if it fails."""

    def reload_nginx(self) -> None:
        """Graceful reload: in-flight requests finish on the old workers."""

    def restart_api(self, variant: str) -> None:
        """Restarts ``food11-api@<variant>``; returns when it has been started."""


def _run(argv: list[str], what: str) -> None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CanaryError(f"{what}: {e}") from e
    if out.returncode != 0:
        msg = (out.stderr or out.stdout).strip().splitlines()
        raise CanaryError(f"{what} failed: {' / '.join(msg[-3:]) or f'exit {out.returncode}'}")


@dataclass
class SystemdServices:
    """The host's systemd and Debian's nginx.service."""

    layout: HostLayout = field(default_factory=host_layout)

    def check_nginx(self) -> None:
        _run([str(self.layout.nginx_bin), "-t", "-q"], "nginx -t")

    def reload_nginx(self) -> None:
        _run(["systemctl", "reload", "nginx.service"], "systemctl reload nginx")

    def restart_api(self, variant: str) -> None:
        _run(["systemctl", "restart", f"food11-api@{variant}.service"],
             f"systemctl restart food11-api@{variant}")


# --- state -------------------------------------------------------------------------

def load_state(layout: HostLayout) -> StackConfig:
    """The effective stack data from ``stack.json`` (written by the deploy)."""
    path = layout.stack_json
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CanaryError(f"{path} does not exist: deploy the stack first") from None
    except (OSError, ValueError) as e:
        raise CanaryError(f"cannot read {path}: {e}") from None
    try:
        return StackConfig.model_validate(data)
    except ValueError as e:
        raise CanaryError(f"{path} is not valid stack data: {e}") from None


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Writes next to ``path`` (hidden name: Nginx's include * skips it) and renames. An
    existing file keeps its mode and owner (the deploy set them; a change here must not
    look like a change to the next deploy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, old.st_mode & 0o7777 if old else mode)
        if old and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_state(layout: HostLayout, stack: StackConfig) -> None:
    _write_atomic(layout.stack_json, hoststate.state_json(stack))


@contextlib.contextmanager
def _locked(layout: HostLayout) -> Iterator[None]:
    """One change at a time (a person and the automated analysis may both act), and
    none while a deploy runs (it would record the state it merged over this change)."""
    if layout.deploy_marker.exists():
        raise CanaryError(f"a deploy is running on this host ({layout.deploy_marker} exists): "
                          "run this again when it has finished; if no deploy is running, remove "
                          "that file")
    layout.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(layout.lock_file):
        yield


def _record(layout: HostLayout, stack: StackConfig, action: str, reason: str, **details: Any) -> None:
    """History line, log line (journal) and the canary_weight metric."""
    entry = {
        "time": time.time(), "action": action, "reason": reason,
        "canary_weight": stack.canary_weight, "canary_shadow_percent": stack.canary_shadow_percent,
        "versions": {v: stack.models[v].version for v in VARIANTS}, **details,
    }
    layout.history_file.parent.mkdir(parents=True, exist_ok=True)
    with open(layout.history_file, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    log.info("canary %s: weight=%d%% shadow=%d%% production=%s canary=%s reason=%s", action,
             stack.canary_weight, stack.canary_shadow_percent, entry["versions"]["production"],
             entry["versions"]["canary"], reason or "-")
    write_weight_metric(layout, stack.canary_weight)


def weight_metric_text(weight: int, now: float | None = None) -> str:
    """node_exporter textfile with ``canary_weight`` (the deploy writes the same)."""
    return (
        "# HELP canary_weight Percent of /api/ traffic Nginx sends to the canary model API.\n"
        "# TYPE canary_weight gauge\n"
        f"canary_weight {weight}\n"
        "# HELP canary_weight_change_timestamp_seconds When the weight was last set.\n"
        "# TYPE canary_weight_change_timestamp_seconds gauge\n"
        f"canary_weight_change_timestamp_seconds {time.time() if now is None else now:.3f}\n"
    )


def write_weight_metric(layout: HostLayout, weight: int) -> None:
    """``canary_weight`` for node_exporter's textfile collector (atomic, as it requires)."""
    text = weight_metric_text(weight)
    try:
        _write_atomic(layout.canary_prom, text)
    except OSError as e:
        log.warning("cannot write %s: %s", layout.canary_prom, e)


# --- validation ----------------------------------------------------------------------

def check_weight(weight: Any, what: str = "weight") -> int:
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise CanaryError(f"{what} must be a whole number of percent, got {weight!r}")
    if not 0 <= weight <= 100:
        raise CanaryError(f"{what} {weight} is outside 0..100 (percent of traffic to the canary)")
    return weight


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise CanaryError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return variant


def check_version(version: str) -> str:
    if not version or not re.match(VERSION_PATTERN, version):
        raise CanaryError(
            f"version {version!r} is not valid: 1-64 characters, letters, digits and ._+- "
            "(starting with a letter or digit)"
        )
    return version


# --- Nginx ---------------------------------------------------------------------------

def validate_site(text: str, layout: HostLayout) -> None:
    """``nginx -t`` on a candidate site inside a standalone nginx.conf; raises if refused."""
    with tempfile.TemporaryDirectory(prefix="gourmetgram-nginx-t-") as tmp:
        site = Path(tmp) / "gourmetgram.conf"
        site.write_text(text)
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(render_standalone(site, Path(tmp)))
        _run([str(layout.nginx_bin), "-t", "-q", "-c", str(conf), "-p", tmp,
              "-g", f"pid {tmp}/nginx.pid; error_log {tmp}/error.log;"],
             "nginx -t on the new site")


def previous_site(layout: HostLayout) -> Path:
    """Where the site that was live before the last swap is kept (outside sites-enabled)."""
    return layout.etc_dir / "nginx" / "gourmetgram.conf.prev"


# Consecutive answers with the new weight that confirm a reload (see _wait_reloaded).
CONFIRMATIONS = 10


def _wait_reloaded(stack: StackConfig, timeout: float = RELOAD_TIMEOUT) -> None:
    """Polls the site's internal endpoint until the live Nginx carries this weight.

    Right after a reload the new workers answer while the old ones may still accept for
    a moment, so one new answer is not enough: it takes ``CONFIRMATIONS`` in a row, each
    on a new connection, before the change counts as live."""
    url = f"http://{stack.bind_address}:{stack.nginx_status_port}/gourmetgram-canary"
    want = (f"canary_weight={stack.canary_weight} sticky={int(stack.sticky_canary)} "
            f"shadow={stack.canary_shadow_percent}")
    deadline = time.monotonic() + timeout
    seen = "no answer"
    streak = 0
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, timeout=2, headers={"Connection": "close"})
            seen = r.text.strip()
        except requests.RequestException as e:
            seen = str(e)
        if seen == want:
            streak += 1
            if streak >= CONFIRMATIONS:
                return
            continue
        streak = 0
        time.sleep(0.05)
    raise CanaryError(
        f"Nginx did not take the new config within {timeout:.0f}s (it reports {seen!r}); "
        "see Nginx's error log"
    )


def apply_site(stack: StackConfig, layout: HostLayout, services: Services) -> None:
    """Render -> nginx -t -> atomic swap (previous kept) -> full check -> reload -> confirm.

    A refused candidate leaves the live file untouched; if the whole live
    configuration fails its check after the swap, or the reload fails or is not
    confirmed, the previous file goes back (and is reloaded), so the site on disk is
    always the one stack.json records.
    """
    text = render_site(stack, layout)
    validate_site(text, layout)
    live = layout.nginx_site
    prev = previous_site(layout)
    had_live = live.exists()
    if had_live:
        _write_atomic(prev, live.read_text())
    _write_atomic(live, text)

    def restore() -> None:
        if had_live:
            _write_atomic(live, prev.read_text())
        else:
            live.unlink(missing_ok=True)

    try:
        services.check_nginx()
    except CanaryError:
        restore()
        raise
    try:
        services.reload_nginx()
        _wait_reloaded(stack)
    except CanaryError as e:
        # Nothing records this site (stack.json is saved only after a confirmed reload),
        # so the previous one goes back on disk and is reloaded again.
        restore()
        try:
            services.reload_nginx()
        except CanaryError as again:
            raise CanaryError(f"{e}; the previous site is back on disk, but reloading it "
                              f"failed too: {again}") from None
        raise CanaryError(f"{e}; the previous site is back on disk and reloaded") from None


# --- API instances -------------------------------------------------------------------

def api_url(stack: StackConfig, variant: str) -> str:
    return f"http://{stack.bind_address}:{stack.api_ports[variant]}"


def probe(stack: StackConfig, variant: str, timeout: float = 2.0) -> dict[str, Any]:
    """What the running instance says: ready, and the model version it serves."""
    try:
        r = requests.get(api_url(stack, variant) + "/readyz", timeout=timeout)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        return {"ready": r.status_code == 200 and bool(body.get("ready")),
                "served_version": body.get("model_version"), "error": None}
    except (requests.RequestException, ValueError) as e:
        return {"ready": False, "served_version": None, "error": type(e).__name__}


def _wait_serving(stack: StackConfig, variant: str, version: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = probe(stack, variant)
        if last["ready"] and (not version or last["served_version"] == version):
            return
        time.sleep(0.2)
    raise CanaryError(
        f"food11-api@{variant} not ready with version {version!r} after {timeout:.0f}s "
        f"(last: {last}); see `journalctl -u food11-api@{variant}`"
    )


def _install_env(stack: StackConfig, layout: HostLayout, variant: str) -> None:
    _write_atomic(layout.env_file(variant), render_api_env(stack, layout, variant), mode=0o640)


def _restart(stack: StackConfig, layout: HostLayout, services: Services, variant: str) -> None:
    _install_env(stack, layout, variant)
    services.restart_api(variant)
    _wait_serving(stack, variant, stack.models[variant].version)


# --- the operations --------------------------------------------------------------------

def status(layout: HostLayout | None = None) -> dict[str, Any]:
    """Weight, mode, each variant's configured and served model version and health."""
    layout = layout or host_layout()
    stack = load_state(layout)
    variants = {}
    for v in VARIANTS:
        share = stack.canary_weight if v == "canary" else 100 - stack.canary_weight
        variants[v] = {
            "url": api_url(stack, v), "weight": share,
            "model_version": stack.models[v].version, "model_path": stack.models[v].path,
            **probe(stack, v),
        }
    history = []
    if layout.history_file.exists():
        history = [json.loads(line) for line in layout.history_file.read_text().splitlines() if line]
    applied = None
    if layout.last_applied.exists():
        applied = hoststate.parse_state_file(layout.last_applied.read_text(), str(layout.last_applied))
    sources = hoststate.provenance(applied, hoststate.flatten(stack.template_data()), history)
    return {"canary_weight": stack.canary_weight, "sticky": stack.sticky_canary,
            "shadow_percent": stack.canary_shadow_percent,
            "variants": variants, "last_change": history[-1] if history else None,
            "sources": {k: sources[k] for k in ("canary_weight", "models.production", "models.canary")}}


def set_weight(weight: int, reason: str = "", layout: HostLayout | None = None,
               services: Services | None = None) -> StackConfig:
    """Sends ``weight`` percent of /api/ traffic to the canary (0 = none)."""
    weight = check_weight(weight)
    layout = layout or host_layout()
    services = services or SystemdServices(layout)
    with _locked(layout):
        return _set_weight(weight, reason, layout, services)


def set_shadow(percent: int, reason: str = "", layout: HostLayout | None = None,
               services: Services | None = None) -> StackConfig:
    """Mirrors ``percent`` of production's predictions to the canary (0 = off), whose
    answers are discarded; only while the canary's weight is 0 (before users see it)."""
    percent = check_weight(percent, "shadow percent")
    layout = layout or host_layout()
    services = services or SystemdServices(layout)
    with _locked(layout):
        stack = load_state(layout)
        if percent and stack.canary_weight:
            raise CanaryError(f"the canary serves {stack.canary_weight}% of users: mirroring "
                              "is for weight 0 only (roll back first)")
        if percent:
            _require_ready(stack, "no requests mirrored to it")
        return _set_weight(0, reason, layout, services, action="shadow", shadow=percent)


def _require_ready(stack: StackConfig, what: str) -> None:
    state = probe(stack, "canary")
    if not state["ready"]:
        raise CanaryError(
            f"the canary at {api_url(stack, 'canary')} is not ready ({state['error'] or 'not ready'}): "
            f"{what}; `gourmetgram canary ship` a model first"
        )


def _set_weight(weight: int, reason: str, layout: HostLayout, services: Services,
                action: str = "set", shadow: int = 0) -> StackConfig:
    """Every routing change ends here; any change but ``set_shadow``'s turns the mirror off."""
    stack = load_state(layout).model_copy(
        update={"canary_weight": weight, "canary_shadow_percent": shadow})
    if action == "set" and weight > 0:
        _require_ready(stack, "no traffic sent to it")
    apply_site(stack, layout, services)
    save_state(layout, stack)
    _record(layout, stack, action, reason)
    return stack


def rollback(reason: str = "rollback", layout: HostLayout | None = None,
             services: Services | None = None) -> StackConfig:
    """Canary weight 0 at once; the canary keeps running for inspection."""
    layout = layout or host_layout()
    services = services or SystemdServices(layout)
    with _locked(layout):
        return _set_weight(0, reason, layout, services, action="rollback")


def ship(model: Path | str, version: str, reason: str = "", layout: HostLayout | None = None,
         services: Services | None = None) -> StackConfig:
    """Installs ``model`` as the canary (weight 0) and restarts the canary instance onto it.

    The file is copied to the models folder under its version and never overwritten;
    if traffic is on the canary, the weight goes to 0 first.
    """
    model = Path(model)
    version = check_version(version)
    if not model.is_file():
        raise CanaryError(f"model file {model} does not exist")
    layout = layout or host_layout()
    services = services or SystemdServices(layout)
    with _locked(layout):
        stack = load_state(layout)
        dest = layout.model_file(version)
        digest = sha256_of(model)
        if dest.exists() and sha256_of(dest) != digest:
            raise CanaryError(
                f"version {version} is already installed at {dest} with other contents; "
                "ship the new model under a new version"
            )
        _check_loads(model, version)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
            os.close(fd)
            shutil.copyfile(model, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        _export_onnx(dest)
        if stack.canary_weight or stack.canary_shadow_percent:
            stack = _set_weight(0, f"ship {version}: canary drained first", layout, services,
                                action="rollback")
        models = {**stack.models, "canary": stack.models["canary"].model_copy(
            update={"path": str(dest), "version": version})}
        stack = stack.model_copy(update={"models": models})
        save_state(layout, stack)
        _restart(stack, layout, services, "canary")
        _record(layout, stack, "ship", reason, sha256=digest)
        return stack


def _check_loads(model: Path, version: str) -> None:
    """Refuses a file the API could not serve, before anything changes."""
    from app_api.model import ModelLoadError, load_model

    try:
        load_model(model, device="cpu", version=version)
    except ModelLoadError as e:
        raise CanaryError(f"model file {model} cannot be served: {e}") from None


def _export_onnx(dest: Path) -> None:
    """What ``gourmetgram export-onnx`` does, before the restart: the canary then serves
    on ONNX Runtime (CPU). A network the check refuses is served with torch."""
    from app_api.model_info import ModelLoadError
    from app_api.onnx_export import export_onnx

    try:
        out, _ = export_onnx(dest)
    except ModelLoadError as e:
        log.warning("%s", e)
        return
    log.info("wrote %s (checked against torch)", out)


def promote(reason: str = "", layout: HostLayout | None = None,
            services: Services | None = None) -> StackConfig:
    """Makes the canary's model the production model without failing a request.

    All traffic goes to the canary (production becomes its backup), production is
    restarted onto the canary's model and waited for, then the canary weight returns to
    0. If production does not come back, traffic stays on the canary and this raises.
    """
    layout = layout or host_layout()
    services = services or SystemdServices(layout)
    with _locked(layout):
        stack = load_state(layout)
        canary = stack.models["canary"]
        if not canary.version or canary == stack.models["production"]:
            raise CanaryError("the canary serves the production model already: nothing to promote")
        state = probe(stack, "canary")
        if not state["ready"] or state["served_version"] != canary.version:
            raise CanaryError(
                f"the canary is not serving {canary.version} (probe: {state}); fix it before promoting"
            )
        stack = _set_weight(100, f"promote {canary.version}: production drained", layout, services,
                            action="promote-drain")
        models = {**stack.models, "production": canary.model_copy()}
        stack = stack.model_copy(update={"models": models})
        save_state(layout, stack)
        try:
            _restart(stack, layout, services, "production")
        except CanaryError as e:
            raise CanaryError(f"{e}. Traffic stays 100% on the canary.") from None
        return _set_weight(0, reason or f"promoted {canary.version}", layout, services,
                           action="promote")


def initialise(stack: StackConfig, layout: HostLayout | None = None) -> None:
    """Writes stack.json, the env files and the weight metric (the deploy's first step)."""
    layout = layout or host_layout()
    save_state(layout, stack)
    for v in VARIANTS:
        _install_env(stack, layout, v)
    write_weight_metric(layout, stack.canary_weight)


__all__ = [
    "CanaryError", "Services", "SystemdServices", "StackDataError", "apply_site", "check_weight",
    "check_variant", "initialise", "load_state", "probe", "promote", "rollback", "set_weight",
    "set_shadow", "setup_logging", "ship", "status", "validate_site", "write_weight_metric",
]
