"""Typed settings of the web app, read from the environment (the systemd unit's
EnvironmentFile) with the ``WEB_`` prefix; the lab's ``FASTAPI_SERVER_URL`` is
accepted for the API's address so the lab's compose files keep working."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app_api.classes import FOOD11_CLASSES

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_TEST_PHOTO = PACKAGE_DIR / "static" / "test-photo.jpeg"


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WEB_", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    api_url: str = Field(
        "http://127.0.0.1:8000",
        validation_alias=AliasChoices("WEB_API_URL", "FASTAPI_SERVER_URL", "api_url"),
        description="Base URL of the model API; POSTs go to <api_url>/predict "
        "(in the deployed stack, Nginx's /api so web traffic takes part in the canary split).",
    )
    api_connect_timeout: float = Field(2.0, gt=0, le=60)
    api_timeout: float = Field(10.0, gt=0, le=300, description="Read timeout of one API call.")
    api_retries: int = Field(
        1, ge=0, le=3, description="Retries after a connection error (never after a read timeout)."
    )
    # 6 MB of image is 8 MB of base64: the API's default body limit (FOOD11_MAX_BODY_BYTES).
    max_upload_bytes: int = Field(6_000_000, ge=1024, le=200_000_000)
    upload_dir: Path | None = Field(
        None, description="Keep uploads here under generated names; empty keeps nothing."
    )
    upload_keep: int = Field(1000, ge=1, le=1_000_000, description="Most uploads kept in upload_dir.")
    sticky_client: bool = Field(
        True, description="Give each browser a random id (cookie gg_client) sent as X-Client-Id."
    )
    cookie_secure: bool = Field(False, description="Mark the cookie Secure (site served over HTTPS).")
    test_image: Path = BUNDLED_TEST_PHOTO
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(4, ge=1, le=64, description="Threads per gunicorn worker (gthread).")
    timeout: int = Field(60, ge=5, le=600, description="gunicorn worker timeout, seconds.")
    header_timeout: float = Field(
        10.0, gt=0, le=300,
        description="Seconds a client has to send a request's headers on the server's own port "
        "(from connecting, or from the last response on a kept-alive connection); then it is closed.",
    )
    metrics_dir: Path | None = Field(
        None, description="prometheus_client multiprocess directory; emptied at start."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # ---- feedback and review (docs/feedback.md) ----
    feedback_dir: Path = Field(
        Path("/var/lib/gourmetgram/feedback"),
        description="Kept photos (photos/, by sha256), the pending answers (pending/) and "
        "the SQLite store.",
    )
    feedback_db_url: str = Field(
        "", description="'' = SQLite in feedback_dir; sqlite:////abs/path or postgresql://...",
    )
    pending_seconds: int = Field(
        3600, ge=60, le=7 * 24 * 3600,
        description="How long a photo waits for the person's right/wrong before it is dropped.",
    )
    pending_keep: int = Field(2000, ge=10, le=100_000, description="Most photos waiting at once.")
    pending_max_bytes: int = Field(
        256_000_000, ge=1_000_000, description="Most bytes of photos waiting at once.",
    )
    pending_dir: Path | None = Field(
        None, description="Where photos wait for an answer; empty: feedback_dir/pending.",
    )
    review_sample_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of all predictions kept for review (random queue).",
    )
    review_low_confidence_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of low-confidence predictions kept for review.",
    )
    review_low_confidence_below: float = Field(0.5, gt=0.0, le=1.0)
    review_password_file: Path | None = Field(
        None, description="Operator password for /review (a systemd credential); unset: no /review.",
    )
    note_max_chars: int = Field(500, ge=0, le=10_000)
    classes: tuple[str, ...] = Field(
        FOOD11_CLASSES, min_length=2, description="The model's classes, for corrections.",
    )

    @field_validator("feedback_db_url")
    @classmethod
    def _db_url(cls, v: str) -> str:
        v = v.strip()
        if v and not (v.startswith(("postgresql://", "postgres://")) or v.startswith("sqlite:////")):
            raise ValueError("must be empty (SQLite in feedback_dir), sqlite:////absolute/path "
                             "or postgresql://user@host/db")
        return v

    @field_validator("upload_dir", "metrics_dir", "review_password_file", "pending_dir",
                     mode="before")
    @classmethod
    def _empty_is_none(cls, v):
        return None if v in ("", None) else v

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        v = v.strip()
        if not v.startswith(("http://", "https://")) or len(v.split("://", 1)[1].strip("/")) == 0:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000")
        if any(c.isspace() for c in v) or "?" in v or "#" in v:
            raise ValueError("must be a base URL without spaces, query or fragment")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _worker_outlives_api_call(self):
        worst = (self.api_retries + 1) * self.api_connect_timeout + self.api_timeout
        if self.timeout <= worst:
            raise ValueError(
                f"timeout ({self.timeout}s) must exceed the longest API call ({worst:g}s), "
                "or gunicorn kills workers that are waiting for the API"
            )
        return self

    @property
    def predict_url(self) -> str:
        return f"{self.api_url}/predict"
