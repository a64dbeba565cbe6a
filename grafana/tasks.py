"""Grafana role: Grafana OSS from Grafana's APT repository (signed key in
/etc/apt/keyrings), listening on the bind address under /grafana/, provisioned from this
folder, with an admin password generated on the host into a root-only file that systemd
hands to Grafana as a credential (never admin/admin).

``install_grafana=False``, or a host that cannot reach Grafana's APT repository (probed
with a short timeout; a deploy there says so in one warning line and goes on), lays
down the password, the provisioning and the unit drop-in, and skips the package and the
service."""

from __future__ import annotations

from io import StringIO

from pyinfra import host, logger
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from gourmetgram.deploy.facts import UrlReachable
from gourmetgram.deploy.ops import generated_secret, install_stopped, put_text
from gourmetgram.deploy.plan import HostPlan
from gourmetgram.host import configs as hostconfig
from gourmetgram.host.render import render
from gourmetgram.monitoring import config as monitoring

REPOSITORY = "https://apt.grafana.com"
SIGNING_KEY = f"{REPOSITORY}/gpg.key"
PROBE_TIMEOUT_S = 5
DROPIN = "/etc/systemd/system/grafana-server.service.d/gourmetgram.conf"


def install_decision(requested: bool, installed: bool, reachable: bool) -> tuple[bool, str | None]:
    """(install Grafana?, the one warning line to log or None). An installed Grafana is
    kept and configured even when the repository is unreachable now."""
    if not requested:
        return False, ("install_grafana=False: Grafana itself is not installed (its "
                       "provisioning, password and unit settings are laid down)")
    if installed or reachable:
        return True, None
    return False, (f"Grafana's APT repository {REPOSITORY} is not reachable from this host: "
                   "Grafana is not installed this run (as with install_grafana=False); its "
                   "provisioning, password and unit settings are laid down, re-run the "
                   "deploy once the repository is reachable")


def apply(plan: HostPlan) -> None:
    generated_secret("the Grafana admin password", str(plan.layout.grafana_password_file))

    requested = plan.deploy.install_grafana
    installed = "grafana" in (host.get_fact(DebPackages) or {})
    reachable = (requested and not installed
                 and host.get_fact(UrlReachable, url=SIGNING_KEY, timeout=PROBE_TIMEOUT_S))
    install, warning = install_decision(requested, installed, bool(reachable))
    if warning:
        logger.warning(f"{host.name}: {warning}")
    if install:
        files.directory(name="Create /etc/apt/keyrings", path="/etc/apt/keyrings", mode="755")
        files.download(
            name="Download Grafana's APT signing key",
            src=SIGNING_KEY,
            dest="/etc/apt/keyrings/grafana.asc",
            mode="644",
        )
        files.put(
            name="Add Grafana's APT repository",
            src=StringIO(f"deb [signed-by=/etc/apt/keyrings/grafana.asc] {REPOSITORY} stable main\n"),
            dest="/etc/apt/sources.list.d/grafana.list",
            mode="644",
        )
        install_stopped("Grafana", ["grafana"])

    wanted = {dest: text for dest, (text, service)
              in monitoring.host_files(plan.stack, layout=plan.layout).items() if service == "grafana-server"}
    for parent in sorted({dest.rsplit("/", 1)[0] for dest in wanted} | {DROPIN.rsplit("/", 1)[0]}):
        files.directory(name=f"Create {parent}", path=parent, mode="755")
    prov_ops = [put_text(f"Install {dest}", text, dest, mode="644") for dest, text in sorted(wanted.items())]
    dropin = put_text("Hand Grafana its admin password (systemd drop-in)",
                      render("grafana/grafana-server.dropin.conf.j2",
                             hostconfig.template_data(plan.stack, plan.layout)),
                      DROPIN, mode="644")
    if install:
        systemd.daemon_reload(name="Reload systemd (Grafana's drop-in changed)", _if=any_changed(dropin))
        systemd.service(name="Restart Grafana (its settings or provisioning changed)",
                        service="grafana-server", restarted=True, _if=any_changed(dropin, *prov_ops))
        systemd.service(name="Enable and start Grafana", service="grafana-server", running=True,
                        enabled=True)
