"""Deploy operation for ``drift_reference_images``: the images reach the host (a folder
on the controller, synced; or an archive URL, downloaded by the host and unpacked), and
``gourmetgram build-drift-reference --state-dir`` builds each API instance's reference
for the model it serves, in that instance's state folder (FOOD11_STATE_DIR). The
instance arms with it: a bootstrapping worker looks for a reference for its model there
(app_api/drift_reference.py), so no restart is needed. Without images, nothing here
runs and each instance bootstraps its reference from its first predictions.

Self-contained: deploy.py calls ``apply(plan)`` after the systemd role."""

from __future__ import annotations

import shlex
from pathlib import Path
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.facts.files import Directory
from pyinfra.operations import files, server

from gourmetgram.deploy.plan import HostPlan

ARCHIVE_DIR = "/var/cache/gourmetgram"


def unpack_command(archive: str, dest: str) -> str:
    """Unpacks a .zip or any tar (gz, bz2, xz) into ``dest``, replacing it whole."""
    a, d, tmp = shlex.quote(archive), shlex.quote(dest), shlex.quote(dest + ".partial")
    return (f"rm -rf {tmp} && mkdir -p {tmp} && "
            f"case {a} in *.zip|*.ZIP) python3 -m zipfile -e {a} {tmp} ;; *) tar -xf {a} -C {tmp} ;; esac"
            f" && rm -rf {d} && mv {tmp} {d}")


def build_command(plan: HostPlan, variant: str, images: str) -> str:
    layout = plan.layout
    q = shlex.quote
    return (f"{q(str(layout.gourmetgram_bin))} build-drift-reference --images {q(images)} "
            f"--state-dir {q(str(layout.drift_dir(variant)))} "
            f"--model {q(plan.stack.models[variant].path)} --device {plan.device} --keep-existing"
            f" && chown -R {layout.service_user}:{layout.service_user} {q(str(layout.drift_root))}")


def apply(plan: HostPlan) -> None:
    source = plan.deploy.drift_reference_images
    if not source:
        return
    images = str(plan.layout.drift_images_dir)
    if source.startswith(("http://", "https://")):
        archive = f"{ARCHIVE_DIR}/drift-images-{Path(urlsplit(source).path).name or 'archive'}"
        files.directory(name=f"Create {ARCHIVE_DIR}", path=ARCHIVE_DIR, mode="755")
        download = files.download(name=f"Download the drift reference images ({source})",
                                  src=source, dest=archive, mode="644")
        unpacked = host.get_fact(Directory, path=images)
        server.shell(name=f"Unpack the drift reference images into {images}",
                     commands=[unpack_command(archive, images)],
                     **({} if not unpacked else {"_if": download.did_change}))
    else:
        files.sync(name=f"Copy the drift reference images to {images}",
                   src=str(Path(source).expanduser().resolve()), dest=images, delete=True)
    for variant in plan.stack.models:
        server.shell(
            name=f"Build the {variant} drift reference from the images (once per model)",
            commands=[build_command(plan, variant, images)],
        )
