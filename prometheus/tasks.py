"""Prometheus role: Prometheus, Alertmanager and the node, process and Nginx exporters
from the distribution, each listening on the bind address only (set in /etc/default
before the first start), configured from this folder's templates (monitoring's
``prometheus.yml.j2``, rules, ``alertmanager.yml.j2``...), checked with promtool, and
reloaded only when their configuration changed."""

from io import StringIO

from pyinfra import host, logger
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gourmetgram import deploykit as dk
from gourmetgram.render import REPO_ROOT, render

stack = dk.host_stack_for(host)
data = stack.template_data()

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

# Every file of prometheus/ except this task: *.j2 rendered, the rest copied, into
# /etc/prometheus (same relative path, without .j2).
sources = sorted(
    p for p in (REPO_ROOT / "prometheus").rglob("*")
    if p.is_file() and p.suffix in (".j2", ".yml", ".yaml") and "__pycache__" not in p.parts
)
config_ops = {"prometheus": [], "prometheus-alertmanager": [], "prometheus-process-exporter": []}
has_process_config = False
for src in sources:
    rel = src.relative_to(REPO_ROOT / "prometheus")
    dest_rel = str(rel)[:-3] if src.suffix == ".j2" else str(rel)
    if dest_rel.startswith("tests/") or dest_rel.endswith(".test.yml"):
        continue
    text = render(f"prometheus/{rel}", data) if src.suffix == ".j2" else src.read_text()
    dest = f"/etc/prometheus/{dest_rel}"
    if "/" in dest_rel:
        files.directory(name=f"Create {dest.rsplit('/', 1)[0]}", path=dest.rsplit("/", 1)[0], mode="755")
    op = files.put(name=f"Install {dest}", src=StringIO(text), dest=dest, mode="644")
    if dest_rel.startswith("alertmanager"):
        config_ops["prometheus-alertmanager"].append(op)
    elif dest_rel.startswith("process-exporter"):
        config_ops["prometheus-process-exporter"].append(op)
        has_process_config = True
    else:
        config_ops["prometheus"].append(op)
if not sources:
    logger.warning(f"{host.name}: monitoring's prometheus/*.j2 are not in this checkout: Prometheus "
                   "keeps Debian's default configuration")

default_ops = {}
for name, text in dk.exporter_defaults(stack, has_process_config).items():
    default_ops[name] = files.put(name=f"Set {name}'s listen address (/etc/default/{name})",
                                  src=StringIO(text), dest=f"/etc/default/{name}", mode="644")

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
        _if=any_changed(default_ops[name], *(config_ops[name] if name in NO_RELOAD else [])),
    )
    if config_ops.get(name) and name not in NO_RELOAD:
        systemd.service(
            name=f"Reload {name} (its configuration changed)",
            service=name,
            reloaded=True,
            _if=any_changed(*config_ops[name]),
        )
    systemd.service(name=f"Enable and start {name}", service=name, running=True, enabled=True)
