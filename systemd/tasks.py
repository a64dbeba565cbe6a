"""systemd role: the API instances (``food11-api@production``, ``food11-api@canary``,
one template unit) and the web app, rendered from this folder's unit templates;
enabled, started, and restarted only when their unit, settings, code or model changed.
The canary controller's unit and settings are installed too, but it stays off until a
person starts it for a rollout (``systemctl start gourmetgram-canary-controller``)."""

from io import StringIO

from pyinfra import host, logger
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from gourmetgram import deploykit as dk

stack = dk.host_stack_for(host)
plan = dk.host_gpu_plan(host)
hostconfig, layout = dk.canary_routing()

if hostconfig is not None:
    units = hostconfig.render_units(stack, layout)
    envs = {v: hostconfig.render_api_env(stack, layout, v) for v in stack.models}
else:
    logger.warning(f"{host.name}: canary-routing's unit templates (systemd/*.j2) are not in this "
                   "checkout: installing the deploy's fallback API unit, no web unit")
    units = {"food11-api@.service": dk.fallback_api_unit()}
    envs = {v: dk.api_env(stack, v, "cpu" if plan.torch_build == "cpu" else "auto")
            for v in stack.models}
web_ok = "gourmetgram-web.service" in units and (dk.REPO_ROOT / "app_web").is_dir()
if not web_ok:
    units.pop("gourmetgram-web.service", None)
    logger.warning(f"{host.name}: app_web/ is not in this checkout: skipping gourmetgram-web")

unit_ops = [
    files.put(name=f"Install the unit {name}", src=StringIO(text),
              dest=f"/etc/systemd/system/{name}", mode="644")
    for name, text in units.items()
]
env_ops = {
    v: files.put(
        name=f"Write the {v} API settings ({dk.env_file(v)})",
        src=StringIO(text),
        dest=dk.env_file(v),
        user="root",
        group=dk.SERVICE_USER,
        mode="640",
    )
    for v, text in envs.items()
}
if hostconfig is not None:
    files.put(
        name=f"Write the canary controller's settings ({layout.etc_dir}/canary-analysis.env)",
        src=StringIO(hostconfig.render_canary_analysis_env(stack, layout)),
        dest=f"{layout.etc_dir}/canary-analysis.env",
        user="root",
        group="root",
        mode="640",
    )
systemd.daemon_reload(name="Reload systemd (unit files changed)", _if=any_changed(*unit_ops))

inputs = dk.API_INPUTS.get(host.name, [])
for variant in stack.models:
    unit = f"food11-api@{variant}"
    systemd.service(
        name=f"Restart {unit} (its unit, settings, code or model changed)",
        service=unit,
        restarted=True,
        _if=any_changed(*unit_ops, env_ops[variant], *inputs),
    )
    systemd.service(name=f"Enable and start {unit}", service=unit, running=True, enabled=True)
if web_ok:
    review_password = stack.review_password_file
    if not host.get_fact(File, path=review_password):
        server.shell(
            name=f"Generate the operator's /review password into {review_password} (root only)",
            commands=[f"test -s {review_password} || (umask 077 && head -c 32 /dev/urandom "
                      f"| base64 | tr -d '/+=\\n' > {review_password})"],
        )
    files.file(name="Keep the /review password root-only", path=review_password,
               user="root", group="root", mode="600", present=True)
    systemd.service(
        name="Restart gourmetgram-web (its unit or code changed)",
        service="gourmetgram-web",
        restarted=True,
        _if=any_changed(*unit_ops, *inputs),
    )
    systemd.service(name="Enable and start gourmetgram-web", service="gourmetgram-web",
                    running=True, enabled=True)
