"""A real VM over SSH, as on the lab's cloud (user ``cc`` with passwordless sudo).

    pyinfra examples/inventory_vm.py deploy.py -y

Put your VM's public address below (or pass ``GOURMETGRAM_VM=1.2.3.4``). Settings not
given here come from group_data/all.py; ``--data key=value`` overrides both.
"""

import os

vm = [(os.environ.get("GOURMETGRAM_VM", "203.0.113.10"), {
    "ssh_user": "cc",
    "ssh_key": os.path.expanduser("~/.ssh/id_rsa_chameleon"),
    "_sudo": True,
    # Leave only Nginx (:80) and SSH reachable from the world.
    "firewall": True,
    # Your model files on this laptop ("" = the demo model):
    # "models": {"production": {"path": "models/food11.pth", "version": "v1"},
    #            "canary": {"path": "models/food11-v2.pth", "version": "v2"}},
})]
