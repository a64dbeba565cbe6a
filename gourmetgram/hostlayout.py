"""Every on-host path of the stack, in one place.

The deploy installs to these paths and ``gourmetgram canary`` reads and writes them.
Each path can be overridden by an environment variable (``GOURMETGRAM_<NAME>``, e.g.
``GOURMETGRAM_ETC_DIR``) so tests run the same code against temporary folders.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ENV_PREFIX = "GOURMETGRAM_"


@dataclass(frozen=True)
class HostLayout:
    app_dir: Path = Path("/opt/gourmetgram/app")
    venv_dir: Path = Path("/opt/gourmetgram/venv")
    etc_dir: Path = Path("/etc/gourmetgram")
    state_dir: Path = Path("/var/lib/gourmetgram")
    # The Nginx site the deploy installs (Debian's nginx.conf includes sites-enabled/*).
    nginx_site: Path = Path("/etc/nginx/sites-enabled/gourmetgram.conf")
    nginx_log_dir: Path = Path("/var/log/nginx")
    nginx_bin: Path = Path("/usr/sbin/nginx")
    # node_exporter's textfile collector (Debian's default folder).
    textfile_dir: Path = Path("/var/lib/prometheus/node-exporter")
    service_user: str = "gourmetgram"

    @property
    def stack_json(self) -> Path:
        """The effective inventory data: written by the deploy, updated by ``canary``."""
        return self.etc_dir / "stack.json"

    @property
    def analysis_env(self) -> Path:
        """The canary analysis settings the deploy writes (read by every on-host command)."""
        return self.etc_dir / "canary-analysis.env"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    @property
    def history_file(self) -> Path:
        """One JSON line per canary change (who reads it: ``canary status``, analysis)."""
        return self.state_dir / "canary-history.jsonl"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "canary.lock"

    @property
    def canary_prom(self) -> Path:
        return self.textfile_dir / "gourmetgram_canary.prom"

    @property
    def gourmetgram_bin(self) -> Path:
        return self.venv_dir / "bin" / "gourmetgram"

    def env_file(self, variant: str) -> Path:
        """The EnvironmentFile of ``food11-api@<variant>``."""
        return self.etc_dir / f"food11-api-{variant}.env"

    def model_file(self, version: str) -> Path:
        """Installed models are named by version and never overwritten."""
        return self.models_dir / f"food11-{version}.pt"

    def template_data(self) -> dict[str, str]:
        """Paths for the templates (all as strings), under the key ``layout``."""
        data = {k: str(v) for k, v in asdict(self).items()}
        for name in ("stack_json", "models_dir", "gourmetgram_bin", "canary_prom"):
            data[name] = str(getattr(self, name))
        return data


def host_layout(env: dict[str, str] | None = None) -> HostLayout:
    """The layout with ``GOURMETGRAM_<FIELD>`` overrides from ``env`` (default: os.environ)."""
    env = os.environ if env is None else env
    kw = {}
    for f in fields(HostLayout):
        value = env.get(ENV_PREFIX + f.name.upper())
        if value:
            kw[f.name] = value if f.name == "service_user" else Path(value)
    return HostLayout(**kw)
