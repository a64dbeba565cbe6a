"""The validated inventory data (``group_data/all.py`` plus overrides).

One typed object for everything that varies by host; templates render from
``StackConfig.template_data()``. Unknown keys and bad values fail here, before any
operation touches a host.
"""

from __future__ import annotations

import json
import re
import runpy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gourmetgram.host.render import REPO_ROOT

GROUP_DATA = REPO_ROOT / "group_data" / "all.py"
VARIANTS = ("production", "canary")
Port = Field(ge=1, le=65535)
# The deploy's roles, in the order deploy.py applies them.
ROLES = Literal["gpu", "install", "systemd", "nginx", "prometheus", "grafana", "firewall"]


VERSION_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._+-]{0,63})?$"


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = ""
    version: str = Field("", pattern=VERSION_PATTERN)


class StackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bind_address: str
    public_address: str
    nginx_port: int = Port
    web_port: int = Port
    api_ports: dict[str, int]
    api_workers: int = Field(ge=1, le=64)
    api_device: Literal["auto", "cpu", "cuda"]
    # Intra-op threads of a forward pass that runs alone (FOOD11_SOLO_THREADS, docs/api.md);
    # a default, so a stack.json written before the key existed still loads.
    api_solo_threads: int = Field(2, ge=0, le=64)
    models: dict[str, ModelSpec]
    canary_weight: int = Field(ge=0, le=100)
    # Percent of production's POST /api/predict requests Nginx mirrors to the canary
    # (the controller's shadow stage, weight 0 only). Runtime state that the controller
    # sets through gourmetgram.canary.routing, not an inventory key: a deploy renders 0.
    canary_shadow_percent: int = Field(0, ge=0, le=100)
    sticky_canary: bool
    max_body_bytes: int = Field(ge=1024)
    prometheus_port: int = Port
    alertmanager_port: int = Port
    node_exporter_port: int = Port
    process_exporter_port: int = Port
    nginx_exporter_port: int = Port
    nginx_status_port: int = Port
    api_timeout_seconds: int = Field(ge=1, le=600)
    grafana_port: int = Port
    canary_analysis_port: int = Port
    mtail_port: int = Port
    canary_auto_rollout: bool
    scrape_interval: str = Field(pattern=r"^\d+(ms|s|m|h)$")
    prometheus_retention: str = Field(pattern=r"^\d+(h|d|w|y)$")
    alert_webhook_url: str
    gpu: bool
    gpu_exporter_port: int = Port
    # /api/metrics, /api/model, /api/docs, /api/openapi.json and /metrics through Nginx.
    public_internal_endpoints: bool = False
    # Host names Nginx serves; [] serves any well-formed name or address.
    server_names: list[str] = Field(default_factory=list)

    # Feedback and review (docs/feedback.md).
    feedback_sample_rate: float = Field(ge=0, le=1)
    feedback_low_confidence_rate: float = Field(ge=0, le=1)
    feedback_low_confidence_below: float = Field(gt=0, le=1)
    # A URL never holds a password here (the unit's environment is readable by all).
    feedback_db_url: str = Field(
        pattern=r"^((postgresql|postgres)://([^\s:@/]+@)?[^\s@]+|sqlite:////[^\s]+)?$")

    @field_validator("server_names", mode="before")
    @classmethod
    def _names_words(cls, v):
        return v.replace(",", " ").split() if isinstance(v, str) else v

    @field_validator("server_names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9*_.-]{1,253}", name):
                raise ValueError(f"{name!r} is not a host name")
        return v

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, v: str) -> str:
        if v and not re.fullmatch(r"https?://[^\s\"']+", v):
            raise ValueError(f"must be empty or an http(s):// URL, got {v!r}")
        return v

    @field_validator("models", "api_ports", mode="before")
    @classmethod
    def _json_text(cls, v):
        """``--data 'models={"production": {...}, ...}'`` arrives as JSON text."""
        if isinstance(v, str):
            try:
                return json.loads(v)
            except json.JSONDecodeError as e:
                raise ValueError(f"not valid JSON: {e}") from None
        return v

    @field_validator("bind_address")
    @classmethod
    def _bind_not_wildcard(cls, v):
        if v in ("0.0.0.0", "::", ""):
            raise ValueError("internal services must not listen on all interfaces")
        return v

    @field_validator("api_ports", "models")
    @classmethod
    def _both_variants(cls, v: dict) -> dict:
        if set(v) != set(VARIANTS):
            raise ValueError(f"needs exactly the variants {list(VARIANTS)}, got {sorted(v)}")
        return v

    @model_validator(mode="after")
    def _shadow_only_at_weight_zero(self) -> StackConfig:
        if self.canary_shadow_percent and self.canary_weight:
            raise ValueError(
                f"canary_shadow_percent {self.canary_shadow_percent} with canary_weight "
                f"{self.canary_weight}: requests are mirrored to the canary only while it "
                "serves no users (weight 0)")
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> StackConfig:
        ports = [
            self.web_port, *self.api_ports.values(), self.prometheus_port, self.alertmanager_port,
            self.node_exporter_port, self.process_exporter_port, self.nginx_exporter_port,
            self.nginx_status_port, self.grafana_port, self.canary_analysis_port, self.mtail_port,
        ]
        dup = sorted({p for p in ports if ports.count(p) > 1})
        if dup:
            raise ValueError(f"ports used twice on the bind address: {dup}")
        return self

    @field_validator("api_ports")
    @classmethod
    def _port_range(cls, v: dict) -> dict:
        for name, port in v.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"port of {name} is {port}, outside 1..65535")
        return v

    def template_data(self) -> dict[str, Any]:
        return self.model_dump()


class DeploySettings(BaseModel):
    """Inventory data only the deploy reads (pip sources, torch build, roles, firewall):
    kept apart from :class:`StackConfig`, which is the runtime state written to the host."""

    model_config = ConfigDict(extra="forbid")

    pip_index_url: str = ""
    pip_extra_index_urls: list[str] = Field(default_factory=list)
    pip_find_links: list[str] = Field(default_factory=list)
    pip_cert: str = ""
    torch_build: Literal["auto", "cpu", "cuda"] = "auto"
    torch_cpu_index_url: str = "https://download.pytorch.org/whl/cpu"
    nvidia_gpu: Literal["auto", "yes", "no"] = "auto"
    reboot_for_driver: bool = False
    drift_reference_images: str = ""
    firewall: bool = False
    install_grafana: bool = True
    roles: list[ROLES] = Field(default_factory=lambda: list(ROLES.__args__))

    @field_validator("roles", mode="before")
    @classmethod
    def _roles_words(cls, v):
        """``--data roles=nginx,prometheus`` re-runs only those roles."""
        return v.replace(",", " ").split() if isinstance(v, str) else v

    @field_validator("pip_extra_index_urls", "pip_find_links", mode="before")
    @classmethod
    def _split_words(cls, v):
        """``--data pip_find_links='/a /b'`` arrives as one string."""
        return v.split() if isinstance(v, str) else v

    @field_validator("pip_index_url", "torch_cpu_index_url", "pip_extra_index_urls")
    @classmethod
    def _index_urls(cls, v):
        for url in [v] if isinstance(v, str) else v:
            if url and not url.startswith(("http://", "https://", "file://")):
                raise ValueError(f"{url!r} is not an http(s):// or file:// URL")
        return v

    @field_validator("pip_find_links")
    @classmethod
    def _find_links(cls, v):
        for url in v:
            if not url.startswith(("http://", "https://", "file://", "/")):
                raise ValueError(f"{url!r} is neither a URL nor an absolute path")
        return v

    @field_validator("pip_cert")
    @classmethod
    def _cert(cls, v):
        if v and not v.startswith("/"):
            raise ValueError(f"{v!r}: give the CA bundle's absolute path on the target")
        return v

    # Keys whose host value the deploy may overwrite although it was changed on the host
    # since the last deploy (``--data overwrite_host=canary_weight``), see hoststate.
    overwrite_host: list[str] = Field(default_factory=list)

    @field_validator("overwrite_host", mode="before")
    @classmethod
    def _overwrite_words(cls, v):
        return v.replace(",", " ").split() if isinstance(v, str) else v


@dataclass(frozen=True)
class Inventory:
    """One host's validated inventory data: runtime state and deploy settings."""

    stack: StackConfig
    deploy: DeploySettings


class StackDataError(ValueError):
    """Bad inventory data; the message names the key."""


def defaults() -> dict[str, Any]:
    return {
        k: v
        for k, v in runpy.run_path(str(GROUP_DATA)).items()
        if not k.startswith("_")
    }


def _validate(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        where = f" {key}" if key else ""
        raise StackDataError(f"inventory data{where}: {first['msg']}") from None


def load_inventory(overrides: Mapping[str, Any] | None = None, base: Path | None = None) -> Inventory:
    """group_data (or ``base``) plus ``overrides``, split into runtime state and deploy
    settings; a key neither knows is refused by name."""
    data = defaults() if base is None else {
        k: v for k, v in runpy.run_path(str(base)).items() if not k.startswith("_")
    }
    data.update(overrides or {})
    deploy_keys = set(DeploySettings.model_fields)
    for key in data:
        if key not in deploy_keys and key not in StackConfig.model_fields:
            raise StackDataError(f"inventory data {key}: unknown key (a typo?)")
    stack = _validate(StackConfig, {k: v for k, v in data.items() if k not in deploy_keys})
    deploy = _validate(DeploySettings, {k: v for k, v in data.items() if k in deploy_keys})
    return Inventory(stack, deploy)


def load_stack(overrides: Mapping[str, Any] | None = None, base: Path | None = None) -> StackConfig:
    """The runtime part of :func:`load_inventory`."""
    return load_inventory(overrides, base).stack
