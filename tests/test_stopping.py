"""A stop signal stops the run at its next durable step, once per thread; a second one
stops it at once. In-process: the signal handlers themselves are tested in
test_signals.py against a running command."""

from __future__ import annotations

import signal
import threading

import pytest

from mailsync import crashpoints, stopping
from mailsync.errors import Interrupted


@pytest.fixture(autouse=True)
def fresh_stop_state():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stopping.reset()
    yield
    stopping.reset()
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_step_without_a_stop_request_goes_on():
    crashpoints.step("written")
    assert not stopping.stop_requested() and stopping.stop_signal() is None


def test_ctrl_c_stops_each_thread_at_its_next_step_once_with_exit_130():
    stopping.request_stop(signal.SIGINT)
    with pytest.raises(Interrupted) as stopped:
        crashpoints.step("written")
    assert stopped.value.exit_code == 130 and "SIGINT" in str(stopped.value)
    crashpoints.step("recorded")          # the way out records what is complete
    in_other_thread = []

    def other() -> None:
        try:
            crashpoints.step("downloaded")
        except Interrupted as exc:
            in_other_thread.append(exc.exit_code)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert in_other_thread == [130]


def test_sigterm_stops_with_exit_75_to_be_retried_later():
    stopping.request_stop(signal.SIGTERM)
    assert stopping.stop_signal() == signal.SIGTERM
    assert stopping.interrupted().exit_code == 75


def test_a_second_signal_stops_at_once():
    stopping.request_stop(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        stopping.request_stop(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL
