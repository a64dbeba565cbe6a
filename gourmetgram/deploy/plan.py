"""One host's deploy plan: everything the roles need, computed once, before any
operation, from the inventory data, the host's facts and the host's live state.

``deploy.py`` builds a :class:`HostPlan` with :func:`plan_host` and hands it to each
role's ``apply``; roles return what later roles need (no module-level state).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app_api.hashing import sha256_of
from gourmetgram.canary.rollout_state import IDLE
from gourmetgram.deploy.gpu import GpuFacts, GpuPlan, plan_gpu
from gourmetgram.host import state as hoststate
from gourmetgram.host.layout import HostLayout, host_layout
from gourmetgram.host.render import REPO_ROOT
from gourmetgram.host.stack import Inventory, StackConfig, StackDataError, load_inventory

# Host data that belongs to pyinfra's connectors, not to the stack.
CONNECTOR_PREFIXES = ("ssh_", "_", "local_", "docker_", "chroot_", "winrm_")
# Local-target host data that only inventory.py and the tests read.
TARGET_KEYS = ("gourmetgram_local_target",)


@dataclass(frozen=True)
class HostPlan:
    name: str
    inventory: Inventory  # what the user asked for (controller model paths)
    desired: StackConfig  # the inventory with host model paths
    stack: StackConfig  # what the host will run: the merge of desired, last applied and live
    merge: hoststate.Merge
    layout: HostLayout
    gpu: GpuPlan
    uploads: dict[str, Path]  # variant -> model file on the controller to upload
    ssh_port: int = 22
    notes: list[str] = field(default_factory=list)

    @property
    def deploy(self):
        return self.inventory.deploy

    @property
    def device(self) -> str:
        return "cpu" if self.gpu.torch_build == "cpu" else "auto"


def inventory_from_host_data(data: Mapping[str, Any]) -> Inventory:
    """The validated inventory of one host; unknown keys and bad values raise
    :class:`StackDataError` naming the key, before any operation is planned."""
    inv = load_inventory({k: v for k, v in data.items()
                          if not k.startswith(CONNECTOR_PREFIXES) and k not in TARGET_KEYS})
    check_controller_files(inv)
    hoststate.check_overwrite_keys(inv.deploy.overwrite_host, inv.stack)
    return inv


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def check_controller_files(inv: Inventory) -> None:
    """Files the deploy uploads must exist on the controller."""
    for variant, spec in inv.stack.models.items():
        if spec.path and not _resolve(spec.path).is_file():
            raise StackDataError(f"inventory data models.{variant}.path: no model file at {spec.path}")
    ref = inv.deploy.drift_reference_images
    if ref and not ref.startswith(("http://", "https://")) and not _resolve(ref).is_dir():
        raise StackDataError(
            f"inventory data drift_reference_images: {ref} is neither a folder nor an http(s) URL"
        )


def demo_model_on_controller() -> Path:
    """Built once on the controller into the ignored var/ folder, then uploaded."""
    out = REPO_ROOT / "var" / "models" / "demo-model.pt"
    if not out.exists():
        from app_api.demo_model import build_demo_model

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".partial")
        build_demo_model(tmp)
        tmp.rename(out)
    return out


def model_sources(stack: StackConfig) -> dict[str, Path]:
    """The controller file of each variant (the demo model where no path is given)."""
    demo = None
    out = {}
    for variant, spec in stack.models.items():
        if spec.path:
            out[variant] = _resolve(spec.path)
        else:
            demo = demo or demo_model_on_controller()
            out[variant] = demo
    return out


def model_path_on_host(layout: HostLayout, version: str, source: Path) -> str:
    """Installed models are named by version (by content where no version is given),
    as ``gourmetgram canary ship`` names them, so both variants may share one file."""
    return str(layout.model_file(version or f"sha256-{sha256_of(source)[:12]}"))


def desired_on_host(stack: StackConfig, layout: HostLayout, sources: Mapping[str, Path]) -> StackConfig:
    """The inventory's stack as the host would run it: model paths are the host's copies."""
    models = {v: spec.model_copy(update={"path": model_path_on_host(layout, spec.version, sources[v])})
              for v, spec in stack.models.items()}
    return stack.model_copy(update={"models": models})


def check_host_free(state: Mapping[str, str], layout: HostLayout) -> None:
    """A canary command mid-change holds the lock, and the controller may be mid-rollout:
    the deploy must not race either."""
    if state.get("lock", "").strip() == "held":
        raise hoststate.RolloutInProgress(
            f"a canary change is in progress on the host (it holds {layout.lock_file}); "
            "wait for it to finish (gourmetgram canary status) and run the deploy again; "
            "nothing was changed")
    text = state.get("rollout", "").strip()
    try:
        rollout = json.loads(text) if text else {}
    except ValueError:
        rollout = {}
    phase = rollout.get("phase", IDLE) if isinstance(rollout, dict) else IDLE
    if phase != IDLE:
        raise hoststate.RolloutInProgress(
            f"the canary controller is in a rollout ({phase}, {rollout.get('cause') or 'no cause'}); "
            "let it finish (gourmetgram canary status) or end it with `gourmetgram canary rollback`, "
            "then run the deploy again; nothing was changed")


def merge_with_host(desired: StackConfig, state: Mapping[str, str], layout: HostLayout,
                    overwrite: list[str]) -> hoststate.Merge:
    last = hoststate.parse_state_file(state.get("last_applied"), str(layout.last_applied))
    live = hoststate.parse_state_file(state.get("live"), str(layout.stack_json))
    return hoststate.merge(last, hoststate.flatten(desired.template_data()), live, overwrite)


def plan_from(name: str, inv: Inventory, gpu_facts: GpuFacts, state: Mapping[str, str],
              layout: HostLayout | None = None, ssh_port: int = 22) -> HostPlan:
    """The pure part of :func:`plan_host` (tests call it with made-up facts and state)."""
    layout = layout or host_layout()
    gpu = plan_gpu(inv.deploy, gpu_facts)
    stack = inv.stack
    # Monitoring's gpu switch (GPU exporter, panels) follows the detection.
    if not stack.gpu and gpu.torch_build == "cuda" and inv.deploy.nvidia_gpu != "no":
        stack = stack.model_copy(update={"gpu": True})
    sources = model_sources(stack)
    desired = desired_on_host(stack, layout, sources)
    check_host_free(state, layout)
    result = merge_with_host(desired, state, layout, inv.deploy.overwrite_host)
    merged = hoststate.merged_stack(desired, result)
    uploads = {v: sources[v] for v in merged.models if merged.models[v] == desired.models[v]}
    notes = [d.line() for d in result.kept]
    return HostPlan(name, inv, desired, merged, result, layout, gpu, uploads, ssh_port, notes)


def plan_host(host) -> HostPlan:
    """Validates the host's data, reads its facts and state, and merges (pyinfra)."""
    from pyinfra.facts.server import LinuxDistribution

    from gourmetgram.deploy import facts

    inv = inventory_from_host_data(host.data.dict())
    layout = host_layout()
    setting = inv.deploy.nvidia_gpu
    gpu_facts = GpuFacts(
        nvidia_devices=host.get_fact(facts.PciDisplayDevices) if setting == "auto" else (),
        driver_loaded=host.get_fact(facts.NvidiaDriverLoaded) if setting != "no" else False,
        distro=(host.get_fact(LinuxDistribution).get("name") or "").lower(),
    )
    state = host.get_fact(facts.HostState, stack_json=str(layout.stack_json),
                          last_applied=str(layout.last_applied), lock_file=str(layout.lock_file),
                          rollout=str(layout.rollout_state))
    return plan_from(host.name, inv, gpu_facts, state, layout, int(host.data.get("ssh_port") or 22))
