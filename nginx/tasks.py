"""Nginx role: Nginx from the distribution, Debian's default site (port 80 on every
interface) removed before the first start, canary-routing's site rendered from the
inventory data, checked with ``nginx -t`` and reloaded only when it changed. The
``canary_weight`` metric for node_exporter is rewritten with the site."""

from io import StringIO

from pyinfra import host, logger
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gourmetgram import deploykit as dk

stack = dk.host_stack_for(host)
hostconfig, layout = dk.canary_routing()

dk.install_stopped(host, "Nginx", ["nginx"])
files.link(name="Remove Debian's default site (it listens on every interface)",
           path="/etc/nginx/sites-enabled/default", present=False)

files.directory(name="Create nginx.service.d", path="/etc/systemd/system/nginx.service.d", mode="755")
hardening = files.put(
    name="Confine nginx.service (systemd drop-in)",
    src=StringIO(dk.NGINX_HARDENING),
    dest="/etc/systemd/system/nginx.service.d/gourmetgram-hardening.conf",
    mode="644",
)
systemd.daemon_reload(name="Reload systemd (Nginx's drop-in changed)", _if=any_changed(hardening))

site_ops = []
if hostconfig is None:
    logger.warning(f"{host.name}: canary-routing's nginx/gourmetgram.conf.j2 is not in this "
                   "checkout: Nginx runs without the GourmetGram site")
else:
    site_ops.append(files.put(
        name=f"Install the GourmetGram site ({layout.nginx_site}), canary at {stack.canary_weight} %",
        src=StringIO(hostconfig.render_site(stack, layout)),
        dest=str(layout.nginx_site),
        mode="644",
    ))
    files.directory(name="Create node_exporter's textfile folder", path=str(layout.textfile_dir),
                    mode="755")
    files.put(
        name="Record the canary weight for node_exporter (canary_weight)",
        src=StringIO(dk.canary_textfile(stack.canary_weight)),
        dest=str(layout.canary_prom),
        mode="644",
        _if=any_changed(*site_ops),
    )

server.shell(name="Check the Nginx configuration (nginx -t)", commands=["nginx -t -q"],
             _if=any_changed(*site_ops))
systemd.service(name="Restart Nginx (its confinement changed)", service="nginx", restarted=True,
                _if=any_changed(hardening))
systemd.service(name="Reload Nginx (its site changed)", service="nginx", reloaded=True,
                _if=any_changed(*site_ops))
systemd.service(name="Enable and start Nginx", service="nginx", running=True, enabled=True)
