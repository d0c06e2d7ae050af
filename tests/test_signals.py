"""SIGTERM and SIGINT stop a run cleanly after the message in flight."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from tests.corpus import make_corpus
from tests.proxy import CutProxy


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 75), (signal.SIGINT, 130)])
def test_signal_stops_fetch_after_the_message_in_flight(make_account, dovecot, signum, code):
    corpus = make_corpus(60)
    acct = make_account()
    acct.server.seed(acct.user, corpus)
    # A slow link, so the signal lands mid-download.
    with CutProxy(dovecot.host, dovecot.pop3s_port, trickle=(4096, 0.01)) as proxy:
        slow = make_account(user=acct.user, port=proxy.port, maildir=str(acct.maildir),
                            state_dir=str(acct.state_dir))
        proc = slow.popen("--no-progress", "fetch")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tmp = acct.maildir / "tmp"
            if tmp.is_dir() and len(list(tmp.iterdir())) >= 3:
                break
            time.sleep(0.02)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"stopped by {signal.Signals(signum).name}" in err.decode()
    stored = acct.local_messages()
    assert 0 < len(stored) < len(corpus)
    db = sqlite3.connect(acct.state_dir / "state.sqlite3")
    assert db.execute("SELECT count(*) FROM pop_seen").fetchone()[0] == len(stored)
    assert len(acct.server_messages()) == len(corpus)   # no QUIT: nothing deleted yet
    assert acct.run("fetch").code == 0
    assert sorted(acct.local_messages()) == sorted(corpus) and acct.server_messages() == []
