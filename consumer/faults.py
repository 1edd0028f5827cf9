"""Fault injection for the crash tests; does nothing unless EVENTFLEET_FAULT is set.

``EVENTFLEET_FAULT="POINT@N"`` kills this process with SIGKILL the Nth time it reaches POINT:
``before_sink_write``, ``in_sink_transaction`` (after the writes, before COMMIT; in the kafka
sink: records acknowledged and offsets sent to the transaction, before commit_transaction),
``after_sink_commit`` (before the Kafka commit) or ``in_replay_reset`` (inside the replay's reset
transaction, before COMMIT). ``"POINT@N:sleep=S"`` stalls there for S
seconds instead, once (a worker stuck in a sink call past its poll interval); ``"POINT@N:wait=PATH"``
waits there until PATH exists (``before_join``: a worker that opened its sink joins the group when
the test says). With
``EVENTFLEET_FAULT_ONCE=PATH`` the fault fires in one process only: the first to fire creates
PATH, and a process that finds it at start is disarmed (a restarted worker runs clean).
"""

import logging
import os
import signal
import time

log = logging.getLogger(__name__)

_POINT, _, _ARM = os.environ.get("EVENTFLEET_FAULT", "").partition("@")
_AT, _, _ACTION = _ARM.partition(":")
_hits = 0
_ONCE = os.environ.get("EVENTFLEET_FAULT_ONCE", "")
if _ONCE and os.path.exists(_ONCE):
    _POINT = ""


def reach(point: str) -> None:
    """Mark that the code reached ``point``; dies there if the fault is armed for it."""
    global _hits
    if point != _POINT:
        return
    _hits += 1
    if _hits >= int(_AT or 1) and _ONCE:
        with open(_ONCE, "a"):
            pass
    if _ACTION.startswith("wait="):
        if _hits == int(_AT or 1):
            log.warning("EVENTFLEET_FAULT: waiting at %s for %s", point, _ACTION[5:])
            while not os.path.exists(_ACTION[5:]):
                time.sleep(0.05)
    elif _ACTION.startswith("sleep="):
        if _hits == int(_AT or 1):
            log.warning("EVENTFLEET_FAULT: stalling %s s at %s", _ACTION[6:], point)
            time.sleep(float(_ACTION[6:]))
    elif _hits >= int(_AT or 1):
        log.warning("EVENTFLEET_FAULT: killing this worker at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)
