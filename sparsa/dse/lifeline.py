"""Pool workers die with their driver: a SIGKILLed `sparsa sweep` must not leave its workers
running (each holds a Python + torch process, ~180 MB) as orphans.

`die_with_parent` is the pool's worker initializer. On Linux the kernel kills the worker when its
parent dies (prctl PR_SET_PDEATHSIG); everywhere, a daemon thread also watches the parent pid and
exits the worker once it has been re-parented (the fallback where prctl is missing). A driver that
died before the initializer ran is caught by the first check.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1
WATCH_PERIOD_S = 1.0  # how often the fallback looks at the parent pid


def die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: the watchdog below still ends the worker
    if os.getppid() != parent_pid:  # the driver died before this worker was set up
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="sparsa-lifeline", daemon=True).start()


def _watch(parent_pid: int) -> None:
    import time

    while os.getppid() == parent_pid:
        time.sleep(WATCH_PERIOD_S)
    os._exit(1)
