"""The whole GourmetGram stack on each host of the inventory, as systemd units.

    pyinfra inventory.py deploy.py -y                       # the local default target
    pyinfra examples/inventory_vm.py deploy.py -y           # a VM over SSH (user cc)
    pyinfra @local deploy.py -y                             # on the VM itself
    pyinfra inventory.py deploy.py -y --data canary_weight=10

Every setting comes from group_data/all.py, the inventory's host data and ``--data``;
it is validated first, so bad data stops the run before anything on a host changes.
One task file per role; each operation has a name; services restart or reload only
when their code, model or configuration changed.
"""

import sys
from pathlib import Path

from pyinfra import host, local

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gourmetgram.deploykit import host_config  # noqa: E402
from gourmetgram.stack import ROLES, StackDataError  # noqa: E402

try:
    cfg = host_config(host)
except StackDataError as e:
    raise SystemExit(f"{host.name}: {e}; nothing was changed") from None

for role in ROLES.__args__:
    if role in cfg.roles:
        local.include(f"{role}/tasks.py")
