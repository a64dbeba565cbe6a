"""Shared fixtures: the demo model (built once per session) and real API processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.procs import REPO_ROOT, ApiServer, server_factory

# Subprocesses import this checkout, not whatever the venv was installed from.
os.environ["PYTHONPATH"] = str(REPO_ROOT) + (
    os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
)


@pytest.fixture(scope="session", autouse=True)
def _api_state_dir(tmp_path_factory):
    """In-process apps (TestClient) keep bootstrapped drift state in the session's temp
    folder, never in a shared one left over from an earlier run."""
    os.environ["FOOD11_STATE_DIR"] = str(tmp_path_factory.mktemp("api-state"))


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    from app_api.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("models") / "demo-model.pt")


@pytest.fixture
def start_api(tmp_path):
    """Factory: ``start_api(model, variant=..., workers=...)`` -> a ready ApiServer."""
    yield from server_factory(lambda model, **kw: ApiServer(tmp_path, model, **kw))
