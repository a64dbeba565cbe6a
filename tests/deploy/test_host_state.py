"""The deploy's three-way merge of inventory, last-applied and live host state, and the
plan built from it: kept host values, applied inventory changes, conflicts that stop
the run, the canary lock, and where ``canary status`` says each value came from."""

from __future__ import annotations

import json

import pytest

from gourmetgram.deploy.gpu import GpuFacts
from gourmetgram.deploy.plan import inventory_from_host_data, plan_from
from gourmetgram.host import state as hoststate
from gourmetgram.host.layout import HostLayout
from gourmetgram.host.stack import StackDataError, load_inventory

V1 = {"path": "/m/food11-v1.pt", "version": "v1"}
V2 = {"path": "/m/food11-v2.pt", "version": "v2"}


@pytest.mark.parametrize("last, want, live, outcome, value", [
    (0, 0, 20, hoststate.KEPT, 20),  # the host changed it, the inventory did not
    (0, 30, 0, hoststate.APPLIED, 30),  # the inventory changed it, the host did not
    (0, 30, 30, hoststate.SAME, 30),  # both to the same value
    (10, 10, 10, hoststate.SAME, 10),
])
def test_merge_per_key(last, want, live, outcome, value):
    result = hoststate.merge({"canary_weight": last}, {"canary_weight": want}, {"canary_weight": live})
    assert result.values == {"canary_weight": value}
    assert [d.outcome for d in result.decisions] == [outcome]


def test_both_changed_is_a_conflict_naming_both_values_and_both_ways_out():
    with pytest.raises(hoststate.StateConflict) as e:
        hoststate.merge({"canary_weight": 0, "models.canary": V1},
                        {"canary_weight": 50, "models.canary": V1},
                        {"canary_weight": 30, "models.canary": V2})
    msg = str(e.value)
    assert "canary_weight: last deployed 0, inventory now 50, host now 30" in msg
    assert "models.canary" not in msg.split("Resolve")[0], "a kept key is no conflict"
    assert "--data overwrite_host=canary_weight" in msg
    assert "keep the host's value: put it in the inventory" in msg and "--data canary_weight=30" in msg
    assert "nothing was changed" in msg


@pytest.mark.parametrize("want", [50, 0])
def test_overwrite_host_lets_the_inventory_win(want):
    """Changed in the inventory or not: ``overwrite_host`` puts the inventory's value back."""
    result = hoststate.merge({"canary_weight": 0}, {"canary_weight": want}, {"canary_weight": 30},
                             overwrite=["canary_weight"])
    assert result.values == {"canary_weight": want}


def test_first_deploy_applies_the_inventory():
    result = hoststate.merge(None, {"canary_weight": 5}, None)
    assert result.values == {"canary_weight": 5} and not result.kept


def test_a_key_new_in_this_version_is_applied():
    result = hoststate.merge({"canary_weight": 0}, {"canary_weight": 0, "new_key": 1}, {"canary_weight": 0})
    assert result.values == {"canary_weight": 0, "new_key": 1}


def _state(stack, **changes) -> str:
    data = stack.template_data()
    data.update(changes)
    return json.dumps(data)


@pytest.fixture
def layout(tmp_path):
    return HostLayout(state_dir=tmp_path / "state", etc_dir=tmp_path / "etc")


def _plan(layout, data=None, live=None, last=None, lock="free", rollout=""):
    inv = load_inventory(data or {})
    return plan_from("h", inv, GpuFacts((), False, "debian"),
                     {"live": live or "", "last_applied": last or "", "lock": lock, "rollout": rollout},
                     layout)


def test_plan_keeps_a_shipped_canary_and_its_weight(layout):
    first = _plan(layout)
    deployed = first.desired
    models = {**deployed.template_data()["models"], "canary": V2}
    again = _plan(layout, live=_state(deployed, canary_weight=20, models=models),
                  last=hoststate.state_json(deployed))
    assert again.stack.canary_weight == 20
    assert again.stack.models["canary"].version == "v2"
    assert "canary" not in again.uploads, "a kept model is not uploaded again"
    assert any(line.startswith("canary_weight: kept host value 20") for line in again.notes)
    assert any(line.startswith("models.canary: kept host value v2") for line in again.notes)
    assert again.desired.canary_weight == 0, "last-applied records the inventory, not the host"


def test_plan_after_promote_keeps_production_on_the_new_model(layout):
    deployed = _plan(layout).desired
    models = {"production": V2, "canary": V2}
    again = _plan(layout, live=_state(deployed, models=models), last=hoststate.state_json(deployed))
    assert again.stack.models["production"].version == "v2"


def test_plan_stops_on_a_conflict(layout):
    deployed = _plan(layout).desired
    with pytest.raises(hoststate.StateConflict, match="inventory now 50, host now 30"):
        _plan(layout, data={"canary_weight": 50}, live=_state(deployed, canary_weight=30),
              last=hoststate.state_json(deployed))


def test_plan_refuses_while_a_canary_command_holds_the_lock(layout):
    with pytest.raises(hoststate.RolloutInProgress, match="canary change is in progress"):
        _plan(layout, lock="held")


@pytest.mark.parametrize("phase", ["running", "rolling-back"])
def test_plan_refuses_while_the_controller_is_in_a_rollout(layout, phase):
    with pytest.raises(hoststate.RolloutInProgress, match=f"in a rollout \\({phase}, ship v2\\)"):
        _plan(layout, rollout=json.dumps({"phase": phase, "cause": "ship v2"}))
    assert _plan(layout, rollout=json.dumps({"phase": "idle"})).stack.canary_weight == 0


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
])
def test_a_damaged_state_file_stops_the_run(layout, text, message):
    with pytest.raises(StackDataError, match=message):
        _plan(layout, live=text, last=text)


@pytest.mark.parametrize("keys", [["canary_wieght"], "models.stable"])
def test_overwrite_host_names_only_known_keys(keys):
    with pytest.raises(StackDataError, match="overwrite_host: unknown keys"):
        inventory_from_host_data({"overwrite_host": keys})


def test_provenance_names_the_command_that_set_a_value():
    last = {"canary_weight": 0, "models.canary": V1}
    live = {"canary_weight": 20, "models.canary": V2}
    history = [{"time": 0, "action": "ship", "canary_weight": 0, "versions": {"canary": "v2"}},
               {"time": 1, "action": "set", "canary_weight": 20, "versions": {"canary": "v2"}}]
    src = hoststate.provenance(last, live, history)
    assert src["canary_weight"].startswith("host: canary set at")
    assert src["models.canary"].startswith("host: canary set at")
    assert hoststate.provenance(live, live, history) == {"canary_weight": "deploy", "models.canary": "deploy"}
