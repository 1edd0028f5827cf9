"""The pipe between the supervisor (fleet.py) and its workers (worker.py): what a worker writes
to its heartbeat pipe, and the exit codes it ends with. Both sides import it from here."""

import os

EXIT_RECYCLE = 75  # a worker that left on purpose (memory guard): replace it at once
EXIT_FENCED = 76  # the broker fenced a worker: another member joined with its group.instance.id
HEARTBEAT = b"h"  # written by a worker's poll loop
JOINED = b"j"  # written by a worker once the group gave it an assignment (even an empty one)


def send(fd: int | None, message: bytes) -> None:
    """Write one message to the supervisor's pipe (nothing when the worker runs unsupervised)."""
    if fd is not None:
        os.write(fd, message)


def received(data: bytes) -> tuple[bool, bool]:
    """What a read of the pipe held: (a sign of life, the worker has joined the group)."""
    return bool(data), JOINED in data
