"""The drift-images deploy operation's host commands, run for real here: an archive
(tar.gz or zip) unpacks into the images folder, replacing what was there; the build
command names the instance's state folder, the host model and --keep-existing."""

from __future__ import annotations

import subprocess
import tarfile
import zipfile
from types import SimpleNamespace

import pytest

from gourmetgram.deploy.drift_images import build_command, unpack_command
from gourmetgram.host.layout import HostLayout
from gourmetgram.host.stack import load_stack


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_unpacks_into_the_images_folder(tmp_path, kind):
    src = tmp_path / "src" / "dishes"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"{i}.jpg").write_bytes(b"jpeg %d" % i)
    archive = tmp_path / f"images.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            for f in src.iterdir():
                z.write(f, f"dishes/{f.name}")
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(src, "dishes")
    dest = tmp_path / "drift-images"
    dest.mkdir()
    (dest / "stale.jpg").write_bytes(b"old")
    subprocess.run(["bash", "-c", unpack_command(str(archive), str(dest))], check=True)
    assert sorted(p.name for p in (dest / "dishes").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
    assert not (dest / "stale.jpg").exists()
    assert not (tmp_path / "drift-images.partial").exists()


def test_build_command_targets_each_instances_state_folder():
    stack = load_stack()
    plan = SimpleNamespace(layout=HostLayout(), stack=stack, device="cpu")
    cmd = build_command(plan, "canary", "/var/lib/gourmetgram/drift-images")
    assert "--state-dir /var/lib/gourmetgram/drift/canary " in cmd
    assert "--model " in cmd and "--device cpu " in cmd
    assert "--keep-existing" in cmd and "chown -R gourmetgram:gourmetgram" in cmd
