"""The durable steps of a run: where a stop request takes effect, and where crash tests
kill it.

Engines call step(name) between the durable steps of a run (after a message is
written, after a commit, after a server command). A run asked to stop by a signal
stops there (mailsync.stopping). Test hook: MAILSYNC_CRASH_AT=N sends SIGKILL at the
N-th step; MAILSYNC_CRASH_COUNT=PATH appends each step's name to PATH, so a test can
learn how many distinct steps a run has. Without them a step costs two comparisons.
"""

from __future__ import annotations

import os
import signal

from mailsync import stopping

_target = int(os.environ.get("MAILSYNC_CRASH_AT", "0") or 0)
_count_file = os.environ.get("MAILSYNC_CRASH_COUNT")
_seen = 0


def step(name: str) -> None:
    global _seen
    stopping.check()
    if not (_target or _count_file):
        return
    _seen += 1
    if _count_file:
        with open(_count_file, "a") as f:
            f.write(name + "\n")
    if _seen == _target:
        os.kill(os.getpid(), signal.SIGKILL)
