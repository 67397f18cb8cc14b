"""Child processes that cannot outlive atopen (the embedded store, the workers)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """Return a preexec_fn that makes the child receive SIGTERM when its parent dies.

    This is what keeps a SIGKILLed atopen from leaving a redis-server or a worker behind,
    which atexit cannot do. It exists on Linux only; elsewhere atexit is the only guard.
    The signal is tied to the thread that starts the child: start children from the
    main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # If the parent died between fork and prctl, no signal will ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec
