"""Grafana role: Grafana OSS from Grafana's APT repository (signed key in
/etc/apt/keyrings), listening on the bind address under /grafana/, provisioned from
this folder, with an admin password generated on the host into a root-only file that
systemd hands to Grafana as a credential (never admin/admin).

``install_grafana=False`` (the local target: Grafana's repository is unreachable
there) lays down the password, the provisioning and the unit drop-in, and skips the
package and the service."""

from io import StringIO

from pyinfra import host, logger
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gourmetgram import deploykit as dk
from gourmetgram.render import REPO_ROOT, render

stack = dk.host_stack_for(host)
data = stack.template_data()
PASSWORD_FILE = getattr(stack, "grafana_admin_password_file", dk.GRAFANA_PASSWORD_FILE)
DASHBOARDS_DIR = getattr(stack, "grafana_dashboards_dir", "/var/lib/grafana/dashboards")

if not host.get_fact(File, path=PASSWORD_FILE):
    server.shell(
        name=f"Generate the Grafana admin password into {PASSWORD_FILE} (root only)",
        commands=[f"test -s {PASSWORD_FILE} || (umask 077 && head -c 32 /dev/urandom "
                  f"| base64 | tr -d '/+=\\n' > {PASSWORD_FILE})"],
    )
files.file(name="Keep the Grafana admin password root-only", path=PASSWORD_FILE,
           user="root", group="root", mode="600", present=True)

if stack.install_grafana:
    files.directory(name="Create /etc/apt/keyrings", path="/etc/apt/keyrings", mode="755")
    files.download(
        name="Download Grafana's APT signing key",
        src="https://apt.grafana.com/gpg.key",
        dest="/etc/apt/keyrings/grafana.asc",
        mode="644",
    )
    files.put(
        name="Add Grafana's APT repository",
        src=StringIO("deb [signed-by=/etc/apt/keyrings/grafana.asc] https://apt.grafana.com stable main\n"),
        dest="/etc/apt/sources.list.d/grafana.list",
        mode="644",
    )
    dk.install_stopped(host, "Grafana", ["grafana"])
else:
    logger.warning(f"{host.name}: install_grafana=False: Grafana itself is not installed "
                   "(its provisioning, password and unit settings are laid down)")

prov_ops = []
host_files = dk.monitoring_files(stack)
if host_files is not None:
    wanted = {dest: text for dest, (text, service) in host_files.items() if service == "grafana-server"}
else:
    # A checkout without gourmetgram/monitoring.py: whatever grafana/ holds.
    wanted = {}
    root = REPO_ROOT / "grafana"
    for src in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                      and p.name != "tasks.py"):
        rel = src.relative_to(root)
        rel_s = str(rel)[:-3] if src.suffix == ".j2" else str(rel)
        if rel_s.startswith("provisioning/"):
            dest = f"/etc/grafana/{rel_s}"
        elif rel_s.startswith("dashboards/"):
            dest = f"{DASHBOARDS_DIR}/{rel_s.removeprefix('dashboards/')}"
        else:
            continue
        wanted[dest] = render(f"grafana/{rel}", data) if src.suffix == ".j2" else src.read_text()
for parent in sorted({dest.rsplit("/", 1)[0] for dest in wanted}):
    files.directory(name=f"Create {parent}", path=parent, mode="755")
for dest, text in sorted(wanted.items()):
    prov_ops.append(files.put(name=f"Install {dest}", src=StringIO(text), dest=dest, mode="644"))
if not prov_ops:
    logger.warning(f"{host.name}: monitoring's grafana/provisioning and dashboards are not in "
                   "this checkout: Grafana gets no provisioning")

files.directory(name="Create grafana-server.service.d", path="/etc/systemd/system/grafana-server.service.d",
                mode="755")
dropin = files.put(
    name="Set Grafana's address, sub-path and admin password (systemd drop-in)",
    src=StringIO(dk.grafana_dropin(stack, PASSWORD_FILE, server_settings=host_files is None)),
    dest="/etc/systemd/system/grafana-server.service.d/gourmetgram.conf",
    mode="644",
)
if stack.install_grafana:
    systemd.daemon_reload(name="Reload systemd (Grafana's drop-in changed)", _if=any_changed(dropin))
    systemd.service(name="Restart Grafana (its settings or provisioning changed)",
                    service="grafana-server", restarted=True, _if=any_changed(dropin, *prov_ops))
    systemd.service(name="Enable and start Grafana", service="grafana-server", running=True,
                    enabled=True)
