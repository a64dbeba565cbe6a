"""systemd role: the API instances (``food11-api@production``, ``food11-api@canary``,
one template unit), the web app and the always-on canary controller (idle, and scraped, until a canary ships),
rendered from this folder's templates; enabled, started, and restarted only when their
unit, settings, code or model changed. ``apply`` returns what the controller restarts
for; ``start_controller`` runs once the roles it writes into have run."""

from __future__ import annotations

from pyinfra.operations import systemd
from pyinfra.operations.util import any_changed

from gourmetgram.deploy.ops import generated_secret, put_text
from gourmetgram.deploy.plan import HostPlan
from gourmetgram.host import configs as hostconfig


def apply(plan: HostPlan, restart_inputs: list) -> list:
    stack, layout = plan.stack, plan.layout
    unit_ops = [
        put_text(f"Install the unit {name}", text, f"/etc/systemd/system/{name}", mode="644")
        for name, text in hostconfig.render_units(stack, layout).items()
    ]
    env_ops = {
        v: put_text(f"Write the {v} API settings ({layout.env_file(v)})",
                    hostconfig.render_api_env(stack, layout, v), str(layout.env_file(v)),
                    user="root", group=layout.service_user, mode="640")
        for v in stack.models
    }
    controller_env = put_text(
        f"Write the canary controller's settings ({layout.analysis_env})",
        hostconfig.render_canary_analysis_env(stack, layout), str(layout.analysis_env),
        user="root", group="root", mode="640")
    systemd.daemon_reload(name="Reload systemd (unit files changed)", _if=any_changed(*unit_ops))

    for variant in stack.models:
        unit = f"food11-api@{variant}"
        systemd.service(
            name=f"Restart {unit} (its unit, settings, code or model changed)",
            service=unit,
            restarted=True,
            _if=any_changed(*unit_ops, env_ops[variant], *restart_inputs),
        )
        systemd.service(name=f"Enable and start {unit}", service=unit, running=True, enabled=True)
    generated_secret("the operator's /review password", str(layout.review_password_file))
    systemd.service(
        name="Restart gourmetgram-web (its unit or code changed)",
        service="gourmetgram-web",
        restarted=True,
        _if=any_changed(*unit_ops, *restart_inputs),
    )
    systemd.service(name="Enable and start gourmetgram-web", service="gourmetgram-web",
                    running=True, enabled=True)
    return [*unit_ops, controller_env, *restart_inputs]


def start_controller(changed_inputs: list) -> None:
    """The always-on controller, started after the Nginx and Prometheus roles: its
    unit may write the Nginx site and node_exporter's textfile folder, which must exist
    when systemd sets up its namespace."""
    systemd.service(
        name="Restart gourmetgram-canary-controller (its unit, settings or code changed)",
        service="gourmetgram-canary-controller",
        restarted=True,
        _if=any_changed(*changed_inputs),
    )
    systemd.service(name="Enable and start gourmetgram-canary-controller (idle until a canary ships)",
                    service="gourmetgram-canary-controller", running=True, enabled=True)
