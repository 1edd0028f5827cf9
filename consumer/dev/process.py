"""What the local development services (dev/kafka.py, dev/registry.py) share about their processes."""

import os
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process: a child that exited is reaped (not alive), and a
    zombie (killed, not yet reaped by its parent) answers kill(0) but is gone."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc here: kill(0) is all we know
