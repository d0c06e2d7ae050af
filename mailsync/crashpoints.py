"""Test hook for crash tests: MAILSYNC_CRASH_AT=N sends SIGKILL at the N-th step.

Engines call step() between the durable steps of a run (after a file is written,
after a commit, after a server command). Without the variable it costs one
comparison. MAILSYNC_CRASH_COUNT=PATH appends each step's name to PATH, so a test
can learn how many distinct steps a run has.
"""

from __future__ import annotations

import os
import signal

_target = int(os.environ.get("MAILSYNC_CRASH_AT", "0") or 0)
_count_file = os.environ.get("MAILSYNC_CRASH_COUNT")
_seen = 0


def step(name: str) -> None:
    global _seen
    if not (_target or _count_file):
        return
    _seen += 1
    if _count_file:
        with open(_count_file, "a") as f:
            f.write(name + "\n")
    if _seen == _target:
        os.kill(os.getpid(), signal.SIGKILL)
