"""Firewall role (``firewall=True``): ufw lets in only SSH and Nginx's port; every
internal service listens on the bind address anyway. Off by default, and off on the
local target (a container sharing the controller's network)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server

from gourmetgram.deploy.plan import HostPlan


def apply(plan: HostPlan) -> None:
    if not plan.deploy.firewall:
        return
    nginx_port = plan.stack.nginx_port
    apt.packages(name="Firewall: install ufw", packages=["ufw"], update=True, cache_time=3600)
    status = host.get_fact(Command, command="ufw status 2>/dev/null || true") or ""
    wanted = [f"{plan.ssh_port}/tcp", f"{nginx_port}/tcp"]
    if "Status: active" not in status or any(w not in status for w in wanted):
        server.shell(
            name=f"Firewall: allow only SSH ({plan.ssh_port}) and Nginx ({nginx_port}) in",
            commands=[
                "ufw default deny incoming",
                "ufw default allow outgoing",
                f"ufw allow {plan.ssh_port}/tcp",
                f"ufw allow {nginx_port}/tcp",
                "ufw --force enable",
            ],
        )
