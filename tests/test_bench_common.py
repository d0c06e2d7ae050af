"""The bench's own plumbing: a wrong measurement would mislead every figure."""

import subprocess
import sys

import pytest

from bench.common import wait_exact


def test_wait_exact_returns_the_exit_status():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"],
                            start_new_session=True)
    assert wait_exact(proc, timeout=60) == 3


def test_wait_exact_kills_the_session_on_timeout():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)
    with pytest.raises(subprocess.TimeoutExpired):
        wait_exact(proc, timeout=0.2)
    assert proc.returncode == -9
