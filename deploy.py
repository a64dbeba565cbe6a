"""The whole GourmetGram stack on each host of the inventory, as systemd units.

    pyinfra inventory.py deploy.py -y                       # the local default target
    pyinfra examples/inventory_vm.py deploy.py -y           # a VM over SSH (user cc)
    pyinfra @local deploy.py -y                             # on the VM itself
    pyinfra inventory.py deploy.py -y --data canary_weight=10

Every setting comes from group_data/all.py, the inventory's host data and ``--data``;
it is validated, and merged with what commands on the host changed since the last
deploy (docs/deploy.md, "Host state"), before anything on a host changes. Each role
folder's ``tasks.py`` has an ``apply`` that takes the host's plan (and what earlier
roles returned); services restart or reload only when their inputs changed.
"""

import importlib.util
import sys
from pathlib import Path

from pyinfra import host

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from gourmetgram.deploy import drift_images, state_ops  # noqa: E402
from gourmetgram.deploy.plan import plan_host  # noqa: E402
from gourmetgram.host.stack import StackDataError  # noqa: E402


def role(name: str):
    """A role folder's task file (role folders hold templates too: not packages)."""
    spec = importlib.util.spec_from_file_location(f"gourmetgram_role_{name}", ROOT / name / "tasks.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


try:
    plan = plan_host(host)
except StackDataError as e:
    message = str(e) if "nothing was changed" in str(e) else f"{e}; nothing was changed"
    raise SystemExit(f"{host.name}: {message}") from None

roles = plan.deploy.roles
state_ops.begin(plan)
if "gpu" in roles:
    role("gpu").apply(plan)
restart_inputs = role("install").apply(plan).restart_inputs if "install" in roles else []
controller_inputs = None
if "systemd" in roles:
    controller_inputs = role("systemd").apply(plan, restart_inputs)
    drift_images.apply(plan)
for name in ("nginx", "prometheus", "grafana", "firewall"):
    if name in roles:
        role(name).apply(plan)
if controller_inputs is not None:
    role("systemd").start_controller(controller_inputs)
state_ops.finish(plan)
