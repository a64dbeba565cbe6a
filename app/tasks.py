"""App role: the service user, the venv with our pinned dependencies (torch's CPU or
CUDA build as the GPU role decided), the code, the models, the effective inventory
data, and the ``gourmetgram`` command on the host's PATH."""

import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.operations import apt, files, pip, server

from gourmetgram import deploykit as dk
from gourmetgram.render import REPO_ROOT

cfg = dk.host_config(host)
plan = dk.host_gpu_plan(host)
_, _, UnmetRequirements, PythonVersion = dk.FACTS()

apt.packages(
    name="Install Python, venv and curl",
    packages=["python3", "python3-venv", "curl", "ca-certificates"],
    update=True,
    cache_time=86400,
    extra_install_args="--no-install-recommends",
)
server.group(name="Create the gourmetgram group", group=dk.SERVICE_USER, system=True)
server.user(
    name="Create the gourmetgram service user",
    user=dk.SERVICE_USER,
    group=dk.SERVICE_USER,
    system=True,
    home="/var/lib/gourmetgram",
    create_home=False,
    shell="/usr/sbin/nologin",
)
# /var/lib/gourmetgram is the service user's home and the units' StateDirectory: owned
# by it (else systemd would chown it recursively at every start); models stay root's.
for path, user, group, mode in (
    (dk.OPT, "root", "root", "755"),
    (dk.ETC, "root", dk.SERVICE_USER, "750"),
    ("/var/lib/gourmetgram", dk.SERVICE_USER, dk.SERVICE_USER, "755"),
    (dk.MODELS_DIR, "root", dk.SERVICE_USER, "750"),
):
    files.directory(name=f"Create {path}", path=path, user=user, group=group, mode=mode)

pip.venv(name=f"Create the venv {dk.VENV}", path=dk.VENV, python="python3")

torch_reqs, other_reqs = dk.pinned_requirements()
flavour = dk.torch_flavour(cfg, plan.torch_build)
unmet_torch = host.get_fact(UnmetRequirements, venv=dk.VENV, flavour=flavour, requirements=torch_reqs)
if unmet_torch:
    opts = dk.pip_options(cfg, plan.torch_build)
    install_torch = server.shell(
        name=dk.TORCH_OP_NAMES[flavour],
        commands=[shlex.join([f"{dk.VENV}/bin/pip", "install", "-q", *opts, *torch_reqs])],
    )
else:
    install_torch = None
unmet = host.get_fact(UnmetRequirements, venv=dk.VENV, flavour="any", requirements=other_reqs)
if unmet:
    install_deps = server.shell(
        name=f"Install the pinned Python dependencies ({len(unmet)} missing)",
        commands=[shlex.join([f"{dk.VENV}/bin/pip", "install", "-q", *dk.pip_options(cfg),
                              *other_reqs])],
    )
else:
    install_deps = None

code_ops = []
for name in dk.CODE_PATHS:
    src = REPO_ROOT / name
    if src.is_dir():
        code_ops.append(files.sync(
            name=f"Copy the code: {name}/",
            src=str(src),
            dest=f"{dk.APP_DIR}/{name}",
            user="root",
            group="root",
            mode="644",
            dir_mode="755",
            delete=True,
            exclude=list(dk.CODE_EXCLUDE),
            exclude_dir=["__pycache__"],
        ))
    elif src.is_file():
        code_ops.append(files.put(name=f"Copy the code: {name}", src=str(src),
                                  dest=f"{dk.APP_DIR}/{name}", mode="644"))

pyver = host.get_fact(PythonVersion)
files.put(
    name="Put the app on the venv's import path",
    src=StringIO(f"{dk.APP_DIR}\n"),
    dest=f"{dk.VENV}/lib/python{pyver}/site-packages/gourmetgram-app.pth",
    mode="644",
)
files.put(
    name="Install the gourmetgram command into the venv",
    src=StringIO(f'#!/bin/sh\nexec {dk.VENV}/bin/python -m gourmetgram "$@"\n'),
    dest=f"{dk.VENV}/bin/gourmetgram",
    mode="755",
)
files.link(
    name="Put the gourmetgram command on the PATH",
    path="/usr/local/bin/gourmetgram",
    target=f"{dk.VENV}/bin/gourmetgram",
)

on_host = dk.host_stack_for(host)
model_ops = [
    files.put(
        name=f"Upload the {variant} model to {on_host.models[variant].path}",
        src=str(dk.MODEL_SOURCES[host.name][variant]),
        dest=on_host.models[variant].path,
        user="root",
        group=dk.SERVICE_USER,
        mode="640",
    )
    for variant in cfg.models
]

if cfg.drift_reference_images:
    logger.warning(f"{host.name}: drift_reference_images is set, but building the drift "
                   "reference is not part of this checkout's deploy yet; drift stays off")

files.put(
    name=f"Write the effective inventory data ({dk.STACK_JSON})",
    src=StringIO(dk.stack_json(on_host)),
    dest=dk.STACK_JSON,
    user="root",
    group=dk.SERVICE_USER,
    mode="640",
)

# What the API units must restart for (the systemd role reads these).
dk.API_INPUTS[host.name] = [op for op in [install_torch, install_deps, *code_ops, *model_ops]
                            if op is not None]
