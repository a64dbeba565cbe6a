"""OS-level names for the API's own threads (``inference_0``, ``decode_1``, ``drift``).

CPython 3.11 and 3.12 leave every thread with the process's name, so ``top -H``,
``ps -L`` and /proc cannot tell a worker's forward passes from its image decoding or
its drift test; with these names they can, and bench/bench_api.py reports the server's
CPU per request by thread from them.
"""

from __future__ import annotations

import ctypes
import sys
import threading

PR_SET_NAME = 15
# The kernel keeps 15 bytes of a thread's name (TASK_COMM_LEN 16, with the NUL).
MAX_BYTES = 15


def name_os_thread() -> None:
    """Gives the calling thread its Python name at the OS level too (Linux; elsewhere,
    or if libc refuses, nothing happens: names only help people look)."""
    if not sys.platform.startswith("linux"):
        return
    name = threading.current_thread().name.encode("utf-8", "replace")[:MAX_BYTES]
    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    except (OSError, AttributeError):
        pass
