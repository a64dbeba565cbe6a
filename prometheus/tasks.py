"""Prometheus role: Prometheus, Alertmanager and the node, process and Nginx exporters
from the distribution, each listening on the bind address only (set in /etc/default
before the first start), configured from this folder's templates, checked with promtool,
and reloaded only when their configuration changed (``gourmetgram.monitoring.config.host_files``
says which daemon reads which file). Debian's units are confined by drop-ins
(``systemd/daemon-hardening.conf.j2``); a changed drop-in restarts its daemon."""

from __future__ import annotations

from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gourmetgram.deploy.ops import hardening_dropin, install_stopped, put_text
from gourmetgram.deploy.plan import HostPlan
from gourmetgram.host import configs as hostconfig
from gourmetgram.monitoring import config as monitoring

PACKAGES = ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter",
            "prometheus-process-exporter", "prometheus-nginx-exporter")
# These read their configuration only at start.
NO_RELOAD = ("prometheus-process-exporter",)


def apply(plan: HostPlan) -> None:
    install_stopped("Prometheus", list(PACKAGES))
    dropins = hostconfig.render_daemon_hardening(plan.stack, plan.layout)
    hardening = {name: hardening_dropin(name, dropins[name]) for name in PACKAGES}
    systemd.daemon_reload(name="Reload systemd (the Prometheus units' drop-ins changed)",
                          _if=any_changed(*hardening.values()))
    config_ops: dict[str, list] = {name: [] for name in PACKAGES}
    defaults: dict[str, list] = {name: [] for name in PACKAGES}
    mine = {dest: v for dest, v in monitoring.host_files(plan.stack, layout=plan.layout).items()
            if v[1] in PACKAGES}
    for parent in sorted({dest.rsplit("/", 1)[0] for dest in mine} - {"/etc/prometheus", "/etc/default"}):
        files.directory(name=f"Create {parent}", path=parent, mode="755")
    for dest, (text, service) in sorted(mine.items()):
        op = put_text(f"Install {dest}", text, dest, mode="644")
        (defaults if dest.startswith("/etc/default/") else config_ops)[service].append(op)
    server.shell(
        name="Check the Prometheus configuration (promtool check config)",
        commands=["promtool check config /etc/prometheus/prometheus.yml"],
        _if=any_changed(*config_ops["prometheus"]),
    )
    server.shell(
        name="Check the Alertmanager configuration (amtool check-config)",
        commands=["amtool check-config /etc/prometheus/alertmanager.yml"],
        _if=any_changed(*config_ops["prometheus-alertmanager"]),
    )
    for name in PACKAGES:
        systemd.service(
            name=f"Restart {name} (its settings or confinement changed)",
            service=name,
            restarted=True,
            _if=any_changed(hardening[name], *defaults[name],
                            *(config_ops[name] if name in NO_RELOAD else [])),
        )
        if config_ops[name] and name not in NO_RELOAD:
            systemd.service(
                name=f"Reload {name} (its configuration changed)",
                service=name,
                reloaded=True,
                _if=any_changed(*config_ops[name]),
            )
        systemd.service(name=f"Enable and start {name}", service=name, running=True, enabled=True)
