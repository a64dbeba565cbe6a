"""The deploy's first and last steps on a host: it holds the host against canary
commands while it runs (a marker they refuse to run beside), says which live values it
keeps, and at the end records the merged state (stack.json) and what it applied
(last-applied.json, the base of the next run's three-way merge)."""

from __future__ import annotations

from pyinfra import logger
from pyinfra.operations import files

from gourmetgram.deploy.ops import put_text
from gourmetgram.deploy.plan import HostPlan
from gourmetgram.host import state as hoststate

MARKER_TEXT = "A GourmetGram deploy is running; gourmetgram canary waits for it to finish.\n"


def begin(plan: HostPlan) -> None:
    for line in plan.notes:
        logger.info(f"{plan.name}: {line}")
    put_text(f"Hold canary commands while the deploy runs ({plan.layout.deploy_marker})", MARKER_TEXT,
             str(plan.layout.deploy_marker), mode="644")


def finish(plan: HostPlan) -> None:
    layout = plan.layout
    put_text(f"Record the host's state ({layout.stack_json})", hoststate.state_json(plan.stack),
             str(layout.stack_json), user="root", group=layout.service_user, mode="640")
    put_text(f"Record what this deploy applied ({layout.last_applied})", hoststate.state_json(plan.desired),
             str(layout.last_applied), user="root", group="root", mode="640")
    files.file(name="Let canary commands run again", path=str(layout.deploy_marker), present=False)
