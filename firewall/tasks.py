"""Firewall role (``firewall=True``): ufw lets in only SSH and Nginx's port; every
internal service listens on the bind address anyway. Off by default, and off on the
local target (a container sharing the controller's network)."""

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server

from gourmetgram import deploykit as dk

stack = dk.host_stack_for(host)

if stack.firewall:
    ssh_port = int(host.data.get("ssh_port") or 22)
    apt.packages(name="Firewall: install ufw", packages=["ufw"], update=True, cache_time=3600)
    status = host.get_fact(Command, command="ufw status 2>/dev/null || true") or ""
    wanted = [f"{ssh_port}/tcp", f"{stack.nginx_port}/tcp"]
    if "Status: active" not in status or any(w not in status for w in wanted):
        server.shell(
            name=f"Firewall: allow only SSH ({ssh_port}) and Nginx ({stack.nginx_port}) in",
            commands=[
                "ufw default deny incoming",
                "ufw default allow outgoing",
                f"ufw allow {ssh_port}/tcp",
                f"ufw allow {stack.nginx_port}/tcp",
                "ufw --force enable",
            ],
        )
