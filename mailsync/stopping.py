"""Stopping a run cleanly on SIGINT/SIGTERM.

After install_signal_handlers() the first signal only sets a flag; the next durable
step of the run (crashpoints.step calls check()) raises Interrupted, so the run stops
after the message in flight, with everything before it recorded. A second signal stops
at once (KeyboardInterrupt), which is still safe: nothing is deleted that is not
recorded. SIGTERM exits 75 (a service manager's stop: retry later), SIGINT 130.
"""

from __future__ import annotations

import signal
import threading

from mailsync.errors import EX_TEMPFAIL, Interrupted

_stop_signal: int | None = None
_raised = threading.local()      # each thread raises Interrupted once, at its next step


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def request_stop(signum: int) -> None:
    """What a stop signal does: the first asks the run to stop at its next step; a
    second one stops at once (KeyboardInterrupt) and leaves signum to its default."""
    global _stop_signal
    if _stop_signal is not None:
        signal.signal(signum, signal.SIG_DFL)
        raise KeyboardInterrupt
    _stop_signal = signum


def stop_requested() -> bool:
    return _stop_signal is not None


def stop_signal() -> int | None:
    """The signal that asked the run to stop, None when none did."""
    return _stop_signal


def check() -> None:
    """Raise Interrupted if a stop was requested, once per thread: each folder thread
    stops at its next step, and the engine then records what is complete, passing more
    steps on its way out."""
    if _stop_signal is not None and not getattr(_raised, "done", False):
        _raised.done = True
        raise interrupted()


def interrupted() -> Interrupted:
    name = signal.Signals(_stop_signal or signal.SIGINT).name
    error = Interrupted(f"stopped by {name}: everything stored so far is recorded",
                        "run again to finish")
    if _stop_signal == signal.SIGTERM:
        error.exit_code = EX_TEMPFAIL
    return error


def reset() -> None:
    """Forget a stop request (a run in the same process after a stopped one: tests)."""
    global _stop_signal, _raised
    _stop_signal = None
    _raised = threading.local()


def _on_signal(signum: int, frame: object) -> None:
    request_stop(signum)
