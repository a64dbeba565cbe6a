"""Install role: the service user, the venv with our pinned dependencies (torch's CPU or
CUDA build as the GPU plan decided), the gourmetgram wheel built on the controller, the
models, and the ``gourmetgram`` command on the host's PATH. Returns the operations
whose change means the API and web units must restart."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, pip, server

from app_api.inference import onnx_path_for
from gourmetgram.deploy import facts, python_env
from gourmetgram.deploy.plan import HostPlan
from gourmetgram.deploy.wheel import controller_wheel


@dataclass
class Installed:
    restart_inputs: list = field(default_factory=list)


def apply(plan: HostPlan) -> Installed:
    layout, settings = plan.layout, plan.deploy
    user = layout.service_user
    venv = str(layout.venv_dir)
    apt.packages(
        name="Install Python, venv and curl",
        packages=["python3", "python3-venv", "curl", "ca-certificates"],
        update=True,
        cache_time=86400,
        extra_install_args="--no-install-recommends",
    )
    server.group(name="Create the gourmetgram group", group=user, system=True)
    server.user(
        name="Create the gourmetgram service user",
        user=user,
        group=user,
        system=True,
        home=str(layout.state_dir),
        create_home=False,
        shell="/usr/sbin/nologin",
    )
    # The state folder is the service user's home and the units' StateDirectory: owned by
    # it (else systemd would chown it recursively at every start); models stay root's.
    for path, owner, group, mode in (
        (layout.venv_dir.parent, "root", "root", "755"),
        (layout.wheels_dir, "root", "root", "755"),
        (layout.etc_dir, "root", user, "750"),
        (layout.state_dir, user, user, "755"),
        (layout.models_dir, "root", user, "750"),
    ):
        files.directory(name=f"Create {path}", path=str(path), user=owner, group=group, mode=mode)

    pip.venv(name=f"Create the venv {venv}", path=venv, python="python3")
    torch_reqs, other_reqs = python_env.pinned_requirements()
    flavour = python_env.torch_flavour(settings, plan.gpu.torch_build)
    ops = []
    if host.get_fact(facts.UnmetRequirements, venv=venv, flavour=flavour, requirements=torch_reqs):
        ops.append(server.shell(
            name=python_env.TORCH_OP_NAMES[flavour],
            commands=[shlex.join([f"{venv}/bin/pip", "install", "-q",
                                  *python_env.pip_options(settings, plan.gpu.torch_build), *torch_reqs])],
        ))
    unmet = host.get_fact(facts.UnmetRequirements, venv=venv, flavour="any", requirements=other_reqs)
    if unmet:
        ops.append(server.shell(
            name=f"Install the pinned Python dependencies ({len(unmet)} missing)",
            commands=[shlex.join([f"{venv}/bin/pip", "install", "-q", *python_env.pip_options(settings),
                                  *other_reqs])],
        ))

    wheel = controller_wheel()
    dest = f"{layout.wheels_dir}/{wheel.name}"
    upload = files.put(name=f"Upload the gourmetgram wheel ({wheel.name})", src=str(wheel), dest=dest,
                       mode="644")
    version = wheel.name.split("-")[1]
    missing = host.get_fact(facts.UnmetRequirements, venv=venv, flavour="any",
                            requirements=[f"gourmetgram=={version}"])
    ops.append(upload)
    server.shell(
        name="Install the gourmetgram wheel into the venv",
        commands=[shlex.join([f"{venv}/bin/pip", "install", "-q", "--no-deps", "--force-reinstall",
                              dest])],
        _if=lambda: bool(missing) or upload.did_change(),
    )
    files.link(name="Put the gourmetgram command on the PATH", path="/usr/local/bin/gourmetgram",
               target=str(layout.gourmetgram_bin))

    exported: set[str] = set()
    for variant, source in sorted(plan.uploads.items()):
        path = plan.stack.models[variant].path
        model = files.put(
            name=f"Upload the {variant} model to {path}",
            src=str(source),
            dest=path,
            user="root",
            group=user,
            mode="640",
        )
        ops.append(model)
        if path in exported:  # both variants serve one file
            continue
        exported.add(path)
        # The ONNX Runtime form the API serves on CPU (FOOD11_RUNTIME=auto), checked
        # against torch; a refused export leaves the API on torch, as the command says.
        onnx_file = str(onnx_path_for(Path(path)))
        no_export = not host.get_fact(File, path=onnx_file)
        ops.append(server.shell(
            name=f"Export the {variant} model to ONNX ({onnx_file})",
            commands=[f"{shlex.quote(str(layout.gourmetgram_bin))} export-onnx --model "
                      f"{shlex.quote(path)} || true"],
            _if=lambda model=model, no_export=no_export: no_export or model.did_change(),
        ))
    return Installed(restart_inputs=ops)
