"""Prometheus role: Prometheus, Alertmanager and the node, process and Nginx exporters
from the distribution, each listening on the bind address only (set in /etc/default
before the first start), configured from this folder's templates (monitoring's
``prometheus.yml.j2``, rules, ``alertmanager.yml.j2``...), checked with promtool, and
reloaded only when their configuration changed (``gourmetgram.monitoring.host_files``
says which daemon reads which file)."""

from io import StringIO

from pyinfra import host, logger
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gourmetgram import deploykit as dk

stack = dk.host_stack_for(host)

PACKAGES = {
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "prometheus-process-exporter": "prometheus-process-exporter",
    "prometheus-nginx-exporter": "prometheus-nginx-exporter",
}
# These read their configuration only at start.
NO_RELOAD = ("prometheus-process-exporter",)
dk.install_stopped(host, "Prometheus", list(PACKAGES))

config_ops: dict[str, list] = {name: [] for name in PACKAGES}
defaults: dict[str, list] = {name: [] for name in PACKAGES}
host_files = dk.monitoring_files(stack)
if host_files is not None:
    # Monitoring's files, each tied to the daemon that reads it.
    mine = {dest: v for dest, v in host_files.items() if v[1] in PACKAGES}
    for parent in sorted({dest.rsplit("/", 1)[0] for dest in mine} - {"/etc/prometheus", "/etc/default"}):
        files.directory(name=f"Create {parent}", path=parent, mode="755")
    for dest, (text, service) in sorted(mine.items()):
        op = files.put(name=f"Install {dest}", src=StringIO(text), dest=dest, mode="644")
        (defaults if dest.startswith("/etc/default/") else config_ops)[service].append(op)
else:
    logger.warning(f"{host.name}: monitoring's gourmetgram/monitoring.py and prometheus/*.j2 are not "
                   "in this checkout: Prometheus keeps Debian's default configuration")
    for name, text in dk.exporter_defaults(stack, process_config=False).items():
        defaults[name] = [files.put(name=f"Set {name}'s listen address (/etc/default/{name})",
                                       src=StringIO(text), dest=f"/etc/default/{name}", mode="644")]
server.shell(
    name="Check the Prometheus configuration (promtool check config)",
    commands=["promtool check config /etc/prometheus/prometheus.yml"],
    _if=any_changed(*config_ops["prometheus"]),
)
if config_ops["prometheus-alertmanager"]:
    server.shell(
        name="Check the Alertmanager configuration (amtool check-config)",
        commands=["amtool check-config /etc/prometheus/alertmanager.yml"],
        _if=any_changed(*config_ops["prometheus-alertmanager"]),
    )

# Without canary-routing's site there is no stub_status for the Nginx exporter to read.
hostconfig, _ = dk.canary_routing()
if hostconfig is None:
    logger.warning(f"{host.name}: no GourmetGram Nginx site in this checkout: the Nginx exporter "
                   "stays stopped")
for name in PACKAGES:
    if name == "prometheus-nginx-exporter" and hostconfig is None:
        systemd.service(name=f"Stop {name} (no stub_status to read)", service=name, running=False,
                        enabled=False)
        continue
    systemd.service(
        name=f"Restart {name} (its settings changed)",
        service=name,
        restarted=True,
        _if=any_changed(*defaults[name], *(config_ops[name] if name in NO_RELOAD else [])),
    )
    if config_ops.get(name) and name not in NO_RELOAD:
        systemd.service(
            name=f"Reload {name} (its configuration changed)",
            service=name,
            reloaded=True,
            _if=any_changed(*config_ops[name]),
        )
    systemd.service(name=f"Enable and start {name}", service=name, running=True, enabled=True)
