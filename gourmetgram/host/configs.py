"""Renders the host's Nginx site, unit files and per-variant environment files.

The deploy and ``gourmetgram canary`` call these, so the file a command swaps in is
byte for byte what the deploy would have written from the same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gourmetgram.host.layout import HostLayout
from gourmetgram.host.render import render
from gourmetgram.host.stack import VARIANTS, StackConfig

SITE_TEMPLATE = "nginx/gourmetgram.conf.j2"
STANDALONE_TEMPLATE = "nginx/nginx-test.conf.j2"
API_UNIT_TEMPLATE = "systemd/food11-api@.service.j2"
WEB_UNIT_TEMPLATE = "systemd/gourmetgram-web.service.j2"
API_ENV_TEMPLATE = "systemd/food11-api.env.j2"
CONTROLLER_ENV_TEMPLATE = "systemd/canary-analysis.env.j2"
DAEMON_HARDENING_TEMPLATE = "systemd/daemon-hardening.conf.j2"
# Rendered unit file name -> template.
UNITS = {
    "food11-api@.service": API_UNIT_TEMPLATE,
    "gourmetgram-web.service": WEB_UNIT_TEMPLATE,
    # Installed by the deploy but neither enabled nor started: a person starts it for a rollout.
    "gourmetgram-canary-controller.service": "systemd/gourmetgram-canary-controller.service.j2",
}



@dataclass(frozen=True)
class Daemon:
    """What one of Debian's daemons needs from the system, for its hardening drop-in."""

    stock_score: str
    why: str
    writable: tuple[str, ...] = ()
    # ProtectProc=invisible: it reads no other user's /proc/<pid>.
    own_processes_only: bool = True
    protect_home: str = "yes"
    netlink: bool = False
    # IPAddressDeny=any except loopback and the bind address (Alertmanager may have to
    # reach a webhook elsewhere).
    local_network_only: bool = True


# Debian's units of the stack that ship unconfined (or, Prometheus, partly confined):
# unit -> its needs. Each gets /etc/systemd/system/<unit>.service.d/gourmetgram-hardening.conf.
DAEMONS = {
    "prometheus": Daemon(
        "3.9", "Writes its TSDB only; scrapes and alerts on this host's addresses.",
        writable=("/var/lib/prometheus/metrics2",)),
    "prometheus-alertmanager": Daemon(
        "9.2", "Writes its silences and notification log only; may send to a webhook anywhere.",
        writable=("/var/lib/prometheus/alertmanager",), local_network_only=False),
    "prometheus-node-exporter": Daemon(
        "9.2", "Reads /proc and /sys, systemd over D-Bus (the systemd collector), the "
        "textfile folder; netlink for the netdev collector; home filesystems read-only, "
        "so the filesystem collector still sees them.",
        protect_home="read-only", netlink=True),
    "prometheus-process-exporter": Daemon(
        "9.2", "Reads /proc/<pid> of every process (cgroup, stat, status): no ProtectProc.",
        own_processes_only=False),
    "prometheus-nginx-exporter": Daemon(
        "9.2", "Reads Nginx's stub_status over HTTP on this host, nothing else."),
    "mtail": Daemon(
        "9.2", "Reads the GourmetGram access log (group adm) and its programs in /etc/mtail."),
}


def template_data(stack: StackConfig, layout: HostLayout, **extra: Any) -> dict[str, Any]:
    return {**stack.template_data(), "layout": layout.template_data(), **extra}


def render_site(stack: StackConfig, layout: HostLayout) -> str:
    return render(SITE_TEMPLATE, template_data(stack, layout))


def render_standalone(site: Path, prefix: Path, nginx_user: str = "", worker_processes: int = 2) -> str:
    """A whole nginx.conf that includes ``site``; temp paths under ``prefix``."""
    return render(STANDALONE_TEMPLATE, {
        "site": str(site), "prefix": str(prefix), "nginx_user": nginx_user,
        "worker_processes": worker_processes,
    })


def render_api_env(stack: StackConfig, layout: HostLayout, variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    return render(API_ENV_TEMPLATE, template_data(stack, layout, variant=variant))


def render_units(stack: StackConfig, layout: HostLayout) -> dict[str, str]:
    """Unit file name -> contents."""
    return {name: render(t, template_data(stack, layout)) for name, t in UNITS.items()}


def render_canary_analysis_env(stack: StackConfig, layout: HostLayout) -> str:
    """The controller's EnvironmentFile (``canary-analysis.env``): Prometheus' URL and
    the metrics port come from the same data as the scrape job that reads them."""
    return render(CONTROLLER_ENV_TEMPLATE, template_data(stack, layout))


def render_daemon_hardening(stack: StackConfig, layout: HostLayout) -> dict[str, str]:
    """Unit name (without .service) -> its hardening drop-in, for every unit of DAEMONS."""
    return {unit: render(DAEMON_HARDENING_TEMPLATE, template_data(stack, layout, unit=unit, d=d))
            for unit, d in DAEMONS.items()}
