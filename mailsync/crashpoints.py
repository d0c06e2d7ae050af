"""The durable steps of a run: where a signal may stop it cleanly, and where crash
tests may kill it.

Engines call step(name) between the durable steps of a run (after a message is
written, after a commit, after a server command).

- SIGINT/SIGTERM (after install_signal_handlers()) only set a flag; the next step
  raises Interrupted, so the run stops after the message in flight, with everything
  before it recorded. A second signal stops at once (KeyboardInterrupt), which is
  still safe: nothing is deleted that is not recorded.
- Test hook: MAILSYNC_CRASH_AT=N sends SIGKILL at the N-th step;
  MAILSYNC_CRASH_COUNT=PATH appends each step's name to PATH, so a test can learn
  how many distinct steps a run has. Without them a step costs two comparisons.
"""

from __future__ import annotations

import os
import signal
import threading

from mailsync.errors import EX_TEMPFAIL, Interrupted

_target = int(os.environ.get("MAILSYNC_CRASH_AT", "0") or 0)
_count_file = os.environ.get("MAILSYNC_CRASH_COUNT")
_seen = 0
_stop_signal: int | None = None
_raised = threading.local()


def step(name: str) -> None:
    global _seen
    if _stop_signal is not None and not getattr(_raised, "done", False):
        # Once per thread (each folder thread stops at its next step): the engine
        # then records what is complete, passing more steps.
        _raised.done = True
        raise interrupted()
    if not (_target or _count_file):
        return
    _seen += 1
    if _count_file:
        with open(_count_file, "a") as f:
            f.write(name + "\n")
    if _seen == _target:
        os.kill(os.getpid(), signal.SIGKILL)


def stop_requested() -> bool:
    return _stop_signal is not None


def interrupted() -> Interrupted:
    name = signal.Signals(_stop_signal or signal.SIGINT).name
    error = Interrupted(f"stopped by {name}: everything stored so far is recorded",
                        "run again to finish")
    if _stop_signal == signal.SIGTERM:
        error.exit_code = EX_TEMPFAIL   # a service manager's stop: retry later
    return error


def _request_stop(signum: int, frame: object) -> None:
    global _stop_signal
    if _stop_signal is not None:
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt
    _stop_signal = signum


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
