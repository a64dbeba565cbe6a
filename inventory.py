"""The local default target: the Debian 12 systemd container that ``make up`` boots
(``python -m gourmetgram.deploy.nspawn up``). For a real VM see examples/inventory_vm.py.

Its settings: every service on the container's own loopback address (127.0.0.2 unless
``GOURMETGRAM_LOCAL_NAME``/``GOURMETGRAM_VAR`` pick another machine), the controller's
pip sources, no GPU detection (a container cannot load a driver), no firewall (it shares the
controller's network). Grafana is installed where its APT repository is reachable from
the container; where it is not, the deploy says so in one line and goes on.
"""

import json
import os

from gourmetgram.deploy.nspawn import Machine

_machine = Machine(os.environ.get("GOURMETGRAM_LOCAL_NAME", "local"))
if not _machine.target_file.exists():
    raise SystemExit(f"no local target at {_machine.target_file}: run `make up` "
                     "(or python -m gourmetgram.deploy.nspawn up) first")
_t = json.loads(_machine.target_file.read_text())

local_target = [(_t["address"], {
    "ssh_port": _t["ssh_port"],
    "ssh_user": "root",
    "ssh_key": _t["ssh_key"],
    "ssh_known_hosts_file": _t["ssh_known_hosts_file"],
    "ssh_strict_host_key_checking": "yes",
    "gourmetgram_local_target": _t["name"],
    "bind_address": _t["address"],
    "public_address": _t["address"],
    "pip_index_url": _t["pip"]["index_url"],
    "pip_extra_index_urls": _t["pip"]["extra_index_urls"],
    "pip_find_links": _t["pip"]["find_links"],
    "pip_cert": _t["pip"]["cert"],
    # The controller's pip sources serve the default (CUDA) torch build; the CPU index
    # is usually unreachable from where this target runs.
    "torch_cpu_index_url": "",
    "nvidia_gpu": "no",
    "firewall": False,
})]
