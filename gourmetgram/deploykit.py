"""What the pyinfra deploy decides, as plain functions of data and facts.

``deploy.py`` and the role task files only turn these decisions into operations, so the
decisions (which inventory data is valid, GPU or not, which pip options, which listen
addresses) are tested without a host. Runs on the controller only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from app_api.hashing import sha256_of
from gourmetgram.render import REPO_ROOT
from gourmetgram.stack import StackConfig, StackDataError, load_stack

# On-host layout (the same paths as gourmetgram/hostlayout.py, INTERFACES.md).
OPT = "/opt/gourmetgram"
APP_DIR = f"{OPT}/app"
VENV = f"{OPT}/venv"
ETC = "/etc/gourmetgram"
STACK_JSON = f"{ETC}/stack.json"
MODELS_DIR = "/var/lib/gourmetgram/models"
DRIFT_DIR = "/var/lib/gourmetgram/drift"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
GRAFANA_PASSWORD_FILE = f"{ETC}/grafana-admin-password"
SERVICE_USER = "gourmetgram"

# The code that goes to the host (the rest of the checkout is tests, docs, caches).
CODE_PATHS = ("app_api", "app_web", "gourmetgram", "group_data", "nginx", "systemd",
              "prometheus", "grafana", "pyproject.toml")
CODE_EXCLUDE = ("*.pyc", "__pycache__", "*/__pycache__/*")

# Host data that belongs to pyinfra's connectors, not to the stack.
CONNECTOR_PREFIXES = ("ssh_", "_", "local_", "docker_", "chroot_", "winrm_")
# Local-target host data that only inventory.py and the tests read.
TARGET_KEYS = ("gourmetgram_local_target",)

TORCH_PACKAGES = ("torch", "torchvision")
NVIDIA_VENDOR = "0x10de"


def env_file(variant: str) -> str:
    return f"{ETC}/food11-api-{variant}.env"


def model_path_on_host(cfg: StackConfig, variant: str, source: Path) -> str:
    """Installed models are named by version (by content where no version is given),
    as ``gourmetgram canary ship`` names them, so both variants may share one file."""
    name = cfg.models[variant].version or f"sha256-{sha256_of(source)[:12]}"
    return f"{MODELS_DIR}/food11-{name}.pt"


def stack_from_host_data(data: Mapping[str, Any]) -> StackConfig:
    """The validated stack settings of one host; unknown keys and bad values raise
    :class:`StackDataError` naming the key, before any operation is planned."""
    stack = {k: v for k, v in data.items()
             if not k.startswith(CONNECTOR_PREFIXES) and k not in TARGET_KEYS}
    cfg = load_stack(stack)
    check_controller_files(cfg)
    return cfg


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def check_controller_files(cfg: StackConfig) -> None:
    """Files the deploy uploads must exist on the controller."""
    for variant, spec in cfg.models.items():
        if spec.path and not _resolve(spec.path).is_file():
            raise StackDataError(f"inventory data models.{variant}.path: no model file at {spec.path}")
    ref = cfg.drift_reference_images
    if ref and not ref.startswith(("http://", "https://")) and not _resolve(ref).is_dir():
        raise StackDataError(
            f"inventory data drift_reference_images: {ref} is neither a folder nor an http(s) URL"
        )


def model_source(cfg: StackConfig, variant: str, demo_model: Path) -> Path:
    spec = cfg.models[variant]
    return _resolve(spec.path) if spec.path else demo_model


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


# ---- GPU -----------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuFacts:
    nvidia_devices: tuple[str, ...]  # PCI addresses of NVIDIA display/3D controllers
    driver_loaded: bool  # nvidia-smi answers
    distro: str  # "ubuntu", "debian", ...


@dataclass(frozen=True)
class GpuPlan:
    torch_build: str  # "cuda" or "cpu"
    install_driver: bool
    driver_packages: tuple[str, ...]
    reason: str


def parse_pci(output: str) -> tuple[str, ...]:
    """Lines ``ADDRESS VENDOR CLASS`` (sysfs values) -> NVIDIA GPUs' addresses."""
    found = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].lower() == NVIDIA_VENDOR and parts[2].lower().startswith("0x03"):
            found.append(parts[0])
    return tuple(found)


def plan_gpu(cfg: StackConfig, facts: GpuFacts) -> GpuPlan:
    if cfg.nvidia_gpu == "no":
        has_gpu, why = False, "nvidia_gpu='no' in the inventory"
    elif cfg.nvidia_gpu == "yes":
        has_gpu, why = True, "nvidia_gpu='yes' in the inventory"
    elif facts.nvidia_devices:
        has_gpu, why = True, f"NVIDIA GPU at {', '.join(facts.nvidia_devices)}"
    else:
        has_gpu, why = False, "no NVIDIA GPU found"
    build = cfg.torch_build if cfg.torch_build != "auto" else ("cuda" if has_gpu else "cpu")
    install = has_gpu and not facts.driver_loaded
    packages: tuple[str, ...] = ()
    if install:
        if facts.distro == "ubuntu":
            packages = ("ubuntu-drivers-common",)
        elif facts.distro == "debian":
            packages = ("nvidia-driver", "firmware-misc-nonfree", "linux-headers-amd64")
        else:
            raise StackDataError(f"NVIDIA driver install: unsupported distribution {facts.distro!r}")
    return GpuPlan(build, install, packages, why)


# ---- Python environment -----------------------------------------------------------------

def pinned_requirements() -> tuple[list[str], list[str]]:
    """(torch pins, everything else) from pyproject.toml's dependencies."""
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = [d for d in deps if d.split("==")[0].strip() in TORCH_PACKAGES]
    rest = [d for d in deps if d not in torch]
    return torch, rest


def pip_options(cfg: StackConfig, torch_build: str | None = None) -> list[str]:
    """pip arguments for the host; with ``torch_build='cpu'`` and a CPU index, torch
    comes from that index only (PyPI's Linux wheels are the CUDA build)."""
    opts: list[str] = []
    if cfg.pip_cert:
        opts += ["--cert", cfg.pip_cert]
    if torch_build == "cpu" and cfg.torch_cpu_index_url:
        return opts + ["--index-url", cfg.torch_cpu_index_url]
    if cfg.pip_index_url:
        opts += ["--index-url", cfg.pip_index_url]
    for url in cfg.pip_extra_index_urls:
        opts += ["--extra-index-url", url]
    for link in cfg.pip_find_links:
        opts += ["--find-links", link]
    return opts


def torch_flavour(cfg: StackConfig, torch_build: str) -> str:
    """What the venv's torch must be: ``cpu`` (a ``+cpu`` build from the CPU index),
    ``cuda`` (not ``+cpu``), or ``any`` (whatever the pip sources serve: the CPU build
    was asked for but ``torch_cpu_index_url`` is empty)."""
    if torch_build == "cpu":
        return "cpu" if cfg.torch_cpu_index_url else "any"
    return "cuda"


TORCH_OP_NAMES = {
    "cpu": "Install torch (CPU build)",
    "cuda": "Install torch (CUDA build)",
    "any": "Install torch (the pip sources' build: torch_cpu_index_url is empty)",
}

# The venv check runs this with the venv's python: prints the requirements not met.
VENV_CHECK = r"""
import sys
from importlib.metadata import version, PackageNotFoundError
flavour = sys.argv[1]
for req in sys.argv[2:]:
    name, _, ver = req.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        print(req); continue
    public, _, local = have.partition("+")
    wrong_build = name == "torch" and flavour != "any" and (flavour == "cpu") != (local == "cpu")
    if public != ver or wrong_build:
        print(req)
"""


def requirements_digest(reqs: list[str], opts: list[str]) -> str:
    return hashlib.sha256(json.dumps([reqs, opts]).encode()).hexdigest()[:16]


# ---- Service settings Debian reads from /etc/default ------------------------------------

def exporter_defaults(cfg: StackConfig, process_config: bool = True) -> dict[str, str]:
    """``/etc/default/<package>`` contents: every listen address set before the first
    start (Debian's packages would listen on all interfaces). Without monitoring's
    process-exporter config, the exporter watches the stack's programs by name."""
    b = cfg.bind_address
    # canary-routing's Nginx site serves stub_status on bind_address:nginx_status_port.
    status_port = getattr(cfg, "nginx_status_port", None) or 8088
    nginx_status = f"http://{b}:{status_port}/stub_status"
    args = {
        "prometheus": [
            f"--web.listen-address={b}:{cfg.prometheus_port}",
            f"--storage.tsdb.retention.time={cfg.prometheus_retention}",
            f"--web.external-url=http://{b}:{cfg.prometheus_port}/",
        ],
        "prometheus-alertmanager": [
            f"--web.listen-address={b}:{cfg.alertmanager_port}",
            "--cluster.listen-address=",
        ],
        "prometheus-node-exporter": [
            f"--web.listen-address={b}:{cfg.node_exporter_port}",
            f"--collector.textfile.directory={TEXTFILE_DIR}",
        ],
        "prometheus-process-exporter": [
            f"-web.listen-address={b}:{cfg.process_exporter_port}",
            "-config.path=/etc/prometheus/process-exporter.yml" if process_config
            else "-procnames=nginx,prometheus,alertmanager,python,python3,grafana",
        ],
        "prometheus-nginx-exporter": [
            f"-web.listen-address={b}:{cfg.nginx_exporter_port}",
            f"-nginx.scrape-uri={nginx_status}",
            # Nginx may still be starting (boot, first deploy): wait for it.
            "-nginx.retries=12",
            "-nginx.retry-interval=5s",
        ],
    }
    return {
        name: "# Written by the GourmetGram deploy (group_data/all.py); edits are overwritten.\n"
        f'ARGS="{" ".join(a)}"\n'
        for name, a in args.items()
    }


def grafana_dropin(cfg: StackConfig, password_file: str = GRAFANA_PASSWORD_FILE,
                   server_settings: bool = True) -> str:
    """systemd drop-in: the admin password, which systemd hands over as a credential so
    the password file itself stays root-only; and, where no grafana.ini is rendered
    (``server_settings``), the listen address and sub-path."""
    b = cfg.bind_address
    text = (
        "# Written by the GourmetGram deploy.\n[Service]\n"
        f"LoadCredential=admin_password:{password_file}\n"
        "Environment=GF_SECURITY_ADMIN_USER=admin\n"
        "Environment=GF_SECURITY_ADMIN_PASSWORD__FILE=%d/admin_password\n"
    )
    if not server_settings:
        return text
    return text + (
        f"Environment=GF_SERVER_HTTP_ADDR={b}\n"
        f"Environment=GF_SERVER_HTTP_PORT={cfg.grafana_port}\n"
        "Environment=GF_SERVER_ROOT_URL=%%(protocol)s://%%(domain)s/grafana/\n"
        "Environment=GF_SERVER_SERVE_FROM_SUB_PATH=true\n"
        "Environment=GF_ANALYTICS_REPORTING_ENABLED=false\n"
        "Environment=GF_ANALYTICS_CHECK_FOR_UPDATES=false\n"
    )


def api_env(cfg: StackConfig, variant: str, device: str) -> str:
    """The API instance's EnvironmentFile (``FOOD11_*``, see app_api/settings.py);
    ``cfg`` holds the host's model paths (:func:`host_stack`)."""
    spec = cfg.models[variant]
    lines = {
        "FOOD11_HOST": cfg.bind_address,
        "FOOD11_PORT": cfg.api_ports[variant],
        "FOOD11_VARIANT": variant,
        "FOOD11_MODEL": spec.path,
        "FOOD11_MODEL_VERSION": spec.version,
        "FOOD11_WORKERS": cfg.api_workers,
        "FOOD11_DEVICE": device,
        "FOOD11_MAX_BODY_BYTES": cfg.max_body_bytes,
        "FOOD11_DRIFT_REFERENCE": f"{DRIFT_DIR}/reference.npz" if cfg.drift_reference_images else "",
    }
    return "# Written by the GourmetGram deploy from the inventory data.\n" + "".join(
        f"{k}={v}\n" for k, v in lines.items()
    )


def monitoring_files(stack: StackConfig) -> dict[str, tuple[str, str]] | None:
    """Monitoring's ``host_files`` (absolute path -> (content, service)) from this
    checkout's ``gourmetgram.monitoring``, or None where it is not in the checkout."""
    try:
        from gourmetgram import monitoring
    except ImportError:
        return None
    if not Path(monitoring.__file__).resolve().is_relative_to(REPO_ROOT):
        return None
    return monitoring.host_files(stack)


def canary_textfile(weight: int, now: float | None = None) -> str:
    """node_exporter textfile, the format ``gourmetgram canary set`` writes."""
    import time

    return (
        "# HELP canary_weight Percent of /api/ traffic Nginx sends to the canary model API.\n"
        "# TYPE canary_weight gauge\n"
        f"canary_weight {weight}\n"
        "# HELP canary_weight_change_timestamp_seconds When the weight was last set.\n"
        "# TYPE canary_weight_change_timestamp_seconds gauge\n"
        f"canary_weight_change_timestamp_seconds {time.time() if now is None else now:.3f}\n"
    )


# Debian's nginx.service runs unconfined ("UNSAFE" to systemd-analyze security): the
# master needs root only to bind :80, switch to www-data and signal its workers.
NGINX_HARDENING = """# Written by the GourmetGram deploy: confines Debian's nginx.service.
[Service]
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_CHOWN CAP_DAC_OVERRIDE CAP_KILL
"""


def fallback_api_unit() -> str:
    """The API unit for a checkout without canary-routing's ``systemd/`` templates."""
    return f"""# Written by the GourmetGram deploy (fallback unit: systemd/food11-api@.service.j2
# was not in the deploying checkout).
[Unit]
Description=GourmetGram Food-11 model API (%i)
After=network.target

[Service]
Type=exec
User={SERVICE_USER}
Group={SERVICE_USER}
EnvironmentFile={ETC}/food11-api-%i.env
Environment=HOME=/var/cache/gourmetgram/%i
ExecStart={VENV}/bin/gourmetgram serve-api
Restart=on-failure
RestartSec=2
KillMode=mixed
TimeoutStopSec=35
RuntimeDirectory=food11-api-%i
CacheDirectory=gourmetgram/%i
UMask=0027
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
"""


def host_stack(cfg: StackConfig, host_models: Mapping[str, str]) -> StackConfig:
    """The effective data on the host: model paths are the host's copies."""
    models = {v: {**cfg.models[v].model_dump(), "path": host_models[v]} for v in cfg.models}
    return cfg.model_copy(update={"models": {v: type(cfg.models[v])(**m) for v, m in models.items()}})


def stack_json(cfg: StackConfig) -> str:
    """/etc/gourmetgram/stack.json, as ``gourmetgram canary`` writes it too."""
    return json.dumps(cfg.template_data(), indent=2, sort_keys=True) + "\n"


def templates(folder: str) -> list[Path]:
    """The ``.j2`` templates that exist in a role folder of this checkout."""
    root = REPO_ROOT / folder
    return sorted(p for p in root.rglob("*.j2") if p.is_file()) if root.is_dir() else []


# ---- pyinfra glue (imported only inside a deploy) --------------------------------------

_CONFIGS: dict[str, StackConfig] = {}
# Operations whose change means "restart the API units" (code, venv, models), per host.
API_INPUTS: dict[str, list] = {}
# The settings as they apply on the host (host model paths), per host.
HOST_STACK: dict[str, StackConfig] = {}


def canary_routing():
    """``(hostconfig, layout)`` from the canary-routing modules, or ``(None, None)`` in a
    checkout without them (the roles then skip or fall back and say so)."""
    try:
        from gourmetgram import hostconfig, hostlayout
    except ImportError:
        return None, None
    # Only this checkout's: an installed copy elsewhere would render other templates.
    if not Path(hostconfig.__file__).resolve().is_relative_to(REPO_ROOT):
        return None, None
    return hostconfig, hostlayout.HostLayout()


def host_config(host) -> StackConfig:
    """The host's validated settings, computed once per host and deploy run."""
    if host.name not in _CONFIGS:
        _CONFIGS[host.name] = stack_from_host_data(host.data.dict())
    return _CONFIGS[host.name]


MODEL_SOURCES: dict[str, dict[str, Path]] = {}


def host_stack_for(host) -> StackConfig:
    """The host's settings with the host's model paths (models named by version)."""
    if host.name not in HOST_STACK:
        cfg = host_config(host)
        demo = None
        sources, paths = {}, {}
        for variant, spec in cfg.models.items():
            if not spec.path and demo is None:
                demo = demo_model_on_controller()
            sources[variant] = model_source(cfg, variant, demo)
            paths[variant] = model_path_on_host(cfg, variant, sources[variant])
        MODEL_SOURCES[host.name] = sources
        on_host = host_stack(cfg, paths)
        # Monitoring's ``gpu`` switch (GPU exporter, panels) follows the detection too.
        if isinstance(getattr(on_host, "gpu", None), bool) and not on_host.gpu:
            if host_gpu_plan(host).torch_build == "cuda" and cfg.nvidia_gpu != "no":
                on_host = on_host.model_copy(update={"gpu": True})
        HOST_STACK[host.name] = on_host
    return HOST_STACK[host.name]


def role_template(folder: str, name: str) -> Path | None:
    path = REPO_ROOT / folder / name
    return path if path.is_file() else None


def _facts():
    """pyinfra fact classes, defined lazily so the pure functions above import alone."""
    from pyinfra.api import FactBase

    class PciDisplayDevices(FactBase):
        """``ADDRESS VENDOR CLASS`` of each PCI device. ``GOURMETGRAM_SYSFS`` (default
        /sys) lets the tests give a dry run a fake machine's sysfs."""

        def command(self):
            return ('for d in "${GOURMETGRAM_SYSFS:-/sys}"/bus/pci/devices/*; do '
                    '[ -r "$d/vendor" ] && echo "${d##*/} $(cat "$d/vendor") $(cat "$d/class")"; '
                    "done; true")

        def process(self, output):
            return parse_pci("\n".join(output))

    class NvidiaDriverLoaded(FactBase):
        def command(self):
            return "nvidia-smi -L >/dev/null 2>&1 && echo yes || echo no"

        def process(self, output):
            return "yes" in output

    class UnmetRequirements(FactBase):
        """Pinned requirements the venv does not satisfy (all of them without a venv)."""

        def command(self, venv, flavour, requirements):
            import shlex

            reqs = " ".join(shlex.quote(r) for r in requirements)
            return (f"if [ -x {venv}/bin/python ]; then {venv}/bin/python -c "
                    f"{shlex.quote(VENV_CHECK)} {flavour} {reqs}; "
                    f"else printf '%s\\n' {reqs}; fi")

        def process(self, output):
            return [line.strip() for line in output if line.strip()]

    class PythonVersion(FactBase):
        def command(self):
            return "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"

        def process(self, output):
            return output[0].strip() if output else ""

    return PciDisplayDevices, NvidiaDriverLoaded, UnmetRequirements, PythonVersion


_PLANS: dict[str, GpuPlan] = {}


def host_gpu_plan(host) -> GpuPlan:
    if host.name not in _PLANS:
        from pyinfra.facts.server import LinuxDistribution

        pci, loaded, _, _ = FACTS()
        cfg = host_config(host)
        distro = (host.get_fact(LinuxDistribution).get("name") or "").lower()
        auto = cfg.nvidia_gpu == "auto"
        facts = GpuFacts(
            nvidia_devices=host.get_fact(pci) if auto else (),
            driver_loaded=host.get_fact(loaded) if cfg.nvidia_gpu != "no" else False,
            distro=distro,
        )
        _PLANS[host.name] = plan_gpu(cfg, facts)
    return _PLANS[host.name]


_FACT_CLASSES = None


def FACTS():  # noqa: N802 - returns the classes
    global _FACT_CLASSES
    if _FACT_CLASSES is None:
        _FACT_CLASSES = _facts()
    return _FACT_CLASSES


POLICY_RC_D = ("#!/bin/sh\n# GourmetGram deploy: packages being installed; services start once "
               "configured.\nexit 101\n")


def install_stopped(host, what: str, packages: list[str]):
    """apt-installs ``packages`` without letting their maintainer scripts start the
    services (Debian's would listen on all interfaces before we set their addresses).
    The policy-rc.d guard is only planned when something is missing, so a second run
    stays change-free."""
    from io import StringIO

    from pyinfra.facts.deb import DebPackages
    from pyinfra.operations import apt, files

    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in packages if p not in installed]
    if missing:
        files.put(name=f"{what}: keep services stopped while installing (policy-rc.d)",
                  src=StringIO(POLICY_RC_D), dest="/usr/sbin/policy-rc.d", mode="755")
    op = apt.packages(
        name=f"{what}: install {', '.join(packages)}",
        packages=packages,
        update=bool(missing),
        cache_time=3600,
        extra_install_args="--no-install-recommends",
    )
    if missing:
        files.file(name=f"{what}: allow services to start again", path="/usr/sbin/policy-rc.d",
                   present=False)
    return op
