"""Nginx role: Nginx from the distribution, Debian's default site (port 80 on every
interface) removed before the first start, the GourmetGram site rendered from the
host's stack data, checked with ``nginx -t`` and reloaded only when it changed. The
``canary_weight`` metric for node_exporter is rewritten with the site. Debian's
nginx.service is confined by a drop-in (``hardening.conf`` beside this file)."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gourmetgram.canary.routing import weight_metric_text
from gourmetgram.deploy.ops import hardening_dropin, install_stopped, put_text
from gourmetgram.deploy.plan import HostPlan
from gourmetgram.host import configs as hostconfig
from gourmetgram.host.render import render

HARDENING = Path(__file__).with_name("hardening.conf")
MTAIL_PROGRAM = Path(__file__).with_name("mtail") / "gourmetgram.mtail"


def apply(plan: HostPlan) -> None:
    stack, layout = plan.stack, plan.layout
    install_stopped("Nginx", ["nginx"])
    files.link(name="Remove Debian's default site (it listens on every interface)",
               path="/etc/nginx/sites-enabled/default", present=False)
    files.directory(name="Create nginx.service.d", path="/etc/systemd/system/nginx.service.d", mode="755")
    hardening = files.put(
        name="Confine nginx.service (systemd drop-in)",
        src=str(HARDENING),
        dest="/etc/systemd/system/nginx.service.d/gourmetgram-hardening.conf",
        mode="644",
    )
    systemd.daemon_reload(name="Reload systemd (Nginx's drop-in changed)", _if=any_changed(hardening))

    site = put_text(f"Install the GourmetGram site ({layout.nginx_site}), canary at {stack.canary_weight} %",
                    hostconfig.render_site(stack, layout), str(layout.nginx_site), mode="644")
    files.directory(name="Create node_exporter's textfile folder", path=str(layout.textfile_dir),
                    mode="755")
    put_text("Record the canary weight for node_exporter (canary_weight)",
             weight_metric_text(stack.canary_weight), str(layout.canary_prom), mode="644",
             _if=any_changed(site))
    server.shell(name="Check the Nginx configuration (nginx -t)", commands=["nginx -t -q"],
                 _if=any_changed(site))
    systemd.service(name="Restart Nginx (its confinement changed)", service="nginx", restarted=True,
                    _if=any_changed(hardening))
    systemd.service(name="Reload Nginx (its site changed)", service="nginx", reloaded=True,
                    _if=any_changed(site))
    systemd.service(name="Enable and start Nginx", service="nginx", running=True, enabled=True)
    apply_mtail(plan)


def apply_mtail(plan: HostPlan) -> None:
    """Debian's mtail turns the site's access log into per-upstream tries and failures
    (the canary analysis's upstream_errors check), on the bind address only, confined
    by a drop-in (``systemd/daemon-hardening.conf.j2``)."""
    install_stopped("mtail", ["mtail"])
    dropin = hostconfig.render_daemon_hardening(plan.stack, plan.layout)["mtail"]
    hardening = hardening_dropin("mtail", dropin)
    systemd.daemon_reload(name="Reload systemd (mtail's drop-in changed)", _if=any_changed(hardening))
    groups = host.get_fact(Command, command="id -nG mtail 2>/dev/null || true") or ""
    if "adm" not in groups.split():
        server.shell(name="Let mtail read Nginx's logs (group adm)", commands=["usermod -aG adm mtail"])
    files.directory(name="Create /etc/mtail", path="/etc/mtail", mode="755")
    program = files.put(name="Install the mtail program for the GourmetGram access log",
                        src=str(MTAIL_PROGRAM), dest="/etc/mtail/gourmetgram.mtail", mode="644")
    defaults = put_text("Set mtail's log, address and port (/etc/default/mtail)",
                        render("nginx/mtail.default.j2", hostconfig.template_data(plan.stack, plan.layout)),
                        "/etc/default/mtail", mode="644")
    systemd.service(name="Restart mtail (its program, settings or confinement changed)", service="mtail",
                    restarted=True, _if=any_changed(program, defaults, hardening))
    systemd.service(name="Enable and start mtail", service="mtail", running=True, enabled=True)
