"""Renders the host's Nginx site, unit files and per-variant environment files.

The deploy and ``gourmetgram canary`` call these, so the file a command swaps in is
byte for byte what the deploy would have written from the same data.
"""

from __future__ import annotations

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
# Rendered unit file name -> template.
UNITS = {
    "food11-api@.service": API_UNIT_TEMPLATE,
    "gourmetgram-web.service": WEB_UNIT_TEMPLATE,
    # Installed by the deploy but neither enabled nor started: a person starts it for a rollout.
    "gourmetgram-canary-controller.service": "systemd/gourmetgram-canary-controller.service.j2",
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
