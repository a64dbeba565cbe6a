"""Typed settings of one API instance, read from the environment (the systemd unit's
EnvironmentFile) with the ``FOOD11_`` prefix, so one code base serves every variant."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app_api.drift import MIN_REFERENCE

VARIANT_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOOD11_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    variant: str = Field("production", pattern=VARIANT_PATTERN)
    # Empty means: the demo model at DEFAULT_DEMO_MODEL, built on first use.
    model: Path | None = None
    model_version: str | None = Field(
        None, description="Overrides the version stored in the model file."
    )
    allow_pickle: bool = Field(
        False, description="Allow loading a whole pickled module (runs code from the file)."
    )
    workers: int = Field(2, ge=1, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto: ONNX Runtime on CPU when the model's export "
        "(gourmetgram export-onnx) matches it, torch otherwise and on CUDA; onnx: refuse "
        "to start without a matching export; torch: always torch.",
    )
    torch_threads: int = Field(
        1, ge=1, le=64, description="Intra-op threads per inference thread (torch or ONNX "
        "Runtime); workers x inference_threads x torch_threads <= cores.",
    )
    solo_threads: int = Field(
        2, ge=0, le=64, description="ONNX Runtime: intra-op threads of a forward pass that "
        "starts while no other runs in its worker (a second session of the model, about 20 "
        "MiB), so a lone request uses the idle cores; 0, or not above torch_threads: off.",
    )
    inference_threads: int = Field(
        2, ge=1, le=64, description="Threads running batches in each worker, sharing one "
        "queue and one model (on CUDA: 1).",
    )
    reuse_port: bool = Field(
        False, description="A listening socket per worker with SO_REUSEPORT (gunicorn "
        "reuse_port), so the kernel spreads new connections over the workers.",
    )
    max_batch: int | None = Field(
        None, ge=1, le=256, description="Most requests in one forward pass; empty: 1 on ONNX "
        "Runtime (a batch costs more per image there and holds more memory), 8 on torch.",
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=10_000)
    max_aspect_ratio: float = Field(
        10.0, ge=1.0, le=100.0, description="Longer side over shorter side, at most."
    )
    max_frames: int = Field(256, ge=1, description="Frames of an animated image, at most.")
    max_decoded_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024,
        description="Bytes an image may decode to (after JPEG draft scaling), at most.",
    )
    decode_threads: int = Field(2, ge=1, le=64)
    metrics_dir: Path | None = Field(
        None, description="prometheus_client multiprocess directory; emptied at start."
    )
    drift_reference: Path | None = Field(
        None, description="Reference built by build-drift-reference; empty: bootstrap one."
    )
    drift_bootstrap_samples: int = Field(
        200, ge=0, le=100_000,
        description="Without drift_reference: the first N predictions become the reference "
        "(half reference set, half calibration pool); 0 turns drift detection off.",
    )
    drift_ert: float = Field(
        300, ge=2, le=1e7, description="Bootstrapped reference: samples between false alarms."
    )
    drift_window: int = Field(10, ge=2, le=1000)
    drift_calibration_streams: int = Field(20_000, ge=1000, le=10_000_000)
    drift_queue_size: int = Field(1024, ge=1)
    state_dir: Path | None = Field(
        None, description="This instance's persistent state (the bootstrapped drift "
        "reference), shared by its workers; empty: a folder under the temp dir."
    )
    shadow_dir: Path | None = Field(
        None, description="Where this instance logs its answers to requests carrying "
        "X-Shadow-Id (the canary's shadow stage, app_api/shadow.py); empty: not logged."
    )
    shadow_max_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024,
        description="Size at which the shadow log is rotated (two files are kept).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    timeout: int = Field(60, ge=5, description="gunicorn worker timeout, seconds.")
    header_timeout: float = Field(
        10.0, gt=0, le=300,
        description="Seconds a client has to send a request's headers on the server's own port "
        "(from connecting, or from the last response on a kept-alive connection); then it is closed.",
    )

    @field_validator("model", "drift_reference", "metrics_dir", "state_dir", "shadow_dir",
                     "max_batch", mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if v in ("", None) else v

    @model_validator(mode="after")
    def _bootstrap_fits_the_window(self):
        # The calibration simulates streams of 4W-1 samples from the held-out half.
        need = max(MIN_REFERENCE, 2 * (4 * self.drift_window - 1))
        if self.drift_reference is None and 0 < self.drift_bootstrap_samples < need:
            raise ValueError(
                f"drift_bootstrap_samples must be 0 (off) or at least {need} for a window "
                f"of {self.drift_window}, got {self.drift_bootstrap_samples}"
            )
        if self.drift_calibration_streams < 20 * self.drift_ert:
            raise ValueError(
                f"drift_calibration_streams must be at least 20 x drift_ert "
                f"({int(20 * self.drift_ert)}), got {self.drift_calibration_streams}"
            )
        return self

    @property
    def drift_state_dir(self) -> Path:
        """Where the bootstrapped reference lives (FOOD11_STATE_DIR on a host)."""
        if self.state_dir is not None:
            return self.state_dir
        return Path(tempfile.gettempdir()) / f"gourmetgram-state-{self.variant}-{self.port}"


DEFAULT_DEMO_MODEL = Path.home() / ".cache" / "gourmetgram" / "demo-model.pt"
