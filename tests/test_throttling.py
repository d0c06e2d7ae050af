"""A throttling provider (issue 16): `[THROTTLED]`, `Suggested Backoff Time`, `Too many
simultaneous connections`, `[UNAVAILABLE]`, `[OVERQUOTA]` are waited on within a bound
(MAX_THROTTLE_WAIT) when they refuse the connection, and end the run with exit 75 and
when to retry otherwise; never a protocol error (65), never a partial state."""

from __future__ import annotations

import json
import threading
import time

import pytest

from mailsync.drivers import imap
from tests.fakeserver import FakeRun, FakeServer, imap_script

MESSAGES = {1: b"Subject: one\nMessage-ID: <1@x>\n\nfirst\n",
            2: b"Subject: two\nMessage-ID: <2@x>\n\nsecond\n"}
CAPS = "IMAP4rev1 UIDPLUS AUTH=PLAIN"


def refuse_first_logins(times: int, answer: str):
    """A LOGIN answer refusing the first `times` logins with `answer`, then accepting."""
    seen = {"logins": 0}
    lock = threading.Lock()

    def login(conn, tag, line) -> bool:
        with lock:
            seen["logins"] += 1
            refused = seen["logins"] <= times
        if refused:
            conn.send(answer.replace("{tag}", tag))
            return True            # and hang up, as Microsoft does
        conn.send(f"{tag} OK [CAPABILITY {CAPS}] logged in")
        return False

    return login, seen


@pytest.mark.parametrize("answer", [
    "{tag} NO [THROTTLED] Suggested Backoff Time: 300 ms",
    "{tag} BAD Request is throttled. Suggested Backoff Time: 300 ms",
])
def test_a_throttled_login_is_waited_on_then_the_run_goes_on(tmp_path, answer):
    login, seen = refuse_first_logins(2, answer)
    run = FakeRun(tmp_path, "imap", connections=1)
    started = time.monotonic()
    with FakeServer(imap_script({"LOGIN": login}, capabilities=CAPS,
                                messages=MESSAGES)) as server:
        result = run.run(server, "--json", "sync")
    assert result.code == 0, result.err
    assert json.loads(result.out)["accounts"][0]["downloaded"] == 2
    assert seen["logins"] == 3
    assert time.monotonic() - started >= 0.6          # it did wait, as asked
    assert len(run.stored()) == 2


def test_a_backoff_beyond_the_bound_ends_at_once_with_75(tmp_path):
    login, _ = refuse_first_logins(99, "{tag} BAD Request is throttled. "
                                       "Suggested Backoff Time: 120000 ms")
    run = FakeRun(tmp_path, "imap")
    started = time.monotonic()
    with FakeServer(imap_script({"LOGIN": login}, capabilities=CAPS,
                                messages=MESSAGES)) as server:
        result = run.run(server, "sync")
    assert result.code == 75, result.err
    assert time.monotonic() - started < 20
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "throttl" in lines[0] and "retry in 120 s" in lines[0], lines
    assert run.stored() == []


@pytest.mark.parametrize("answer", [
    "{tag} BAD Request is throttled. Suggested Backoff Time: 500 ms",
    "{tag} NO [OVERQUOTA] Account exceeded command or bandwidth limits",
    "{tag} NO [UNAVAILABLE] Temporary server problem",
])
def test_throttled_mid_run_ends_with_75_and_the_next_run_converges(tmp_path, answer):
    run = FakeRun(tmp_path, "imap")
    with FakeServer(imap_script({"UID FETCH BODY.PEEK[]": [answer]}, capabilities=CAPS,
                                messages=MESSAGES)) as server:
        result = run.run(server, "--json", "sync")
    assert result.code == 75, result.err               # not 65: the server did no wrong
    assert run.stored() == []
    with FakeServer(imap_script(capabilities=CAPS, messages=MESSAGES)) as server:
        again = run.run(server, "--json", "sync")
        last = run.run(server, "--json", "sync")
    assert again.code == 0, again.err
    assert json.loads(again.out)["accounts"][0]["downloaded"] == 2
    assert len(run.stored()) == 2
    assert json.loads(last.out)["accounts"][0]["downloaded"] == 0


@pytest.mark.parametrize("text, delay", [
    ("NO [THROTTLED] slow down", imap.THROTTLE_WAIT),
    ("BAD Request is throttled. Suggested Backoff Time: 2500 ms", 2.5),
    ("* BYE Too many simultaneous connections. (Failure)", imap.THROTTLE_WAIT),
    ("NO [OVERQUOTA] Account exceeded command or bandwidth limits", imap.THROTTLE_WAIT),
    ("NO [UNAVAILABLE] try later", imap.THROTTLE_WAIT),
    ("NO [TRYCREATE] no such folder", None),
    ("BAD parse error", None),
])
def test_throttling_answers_are_recognised(text, delay):
    assert imap.throttle_delay(text) == delay


def test_connect_waiting_stays_within_its_bound(monkeypatch):
    calls, slept = [], []

    def throttled(*args, **kwargs):
        calls.append(1)
        raise imap.Throttled("throttled", "later", 20.0)

    monkeypatch.setattr(imap, "connect", throttled)
    with pytest.raises(imap.Throttled):
        imap.connect_waiting(None, "", None, sleep=slept.append)
    assert slept == [20.0, 20.0, 20.0] and sum(slept) <= imap.MAX_THROTTLE_WAIT
    assert len(calls) == 4


def test_an_extra_connection_refused_is_done_without(tmp_path):
    """Gmail's "Too many simultaneous connections" for a second connection: the run
    goes on with the one it has, without waiting."""
    seen = {"logins": 0}
    lock = threading.Lock()

    def login(conn, tag, line) -> bool:
        with lock:
            seen["logins"] += 1
            first = seen["logins"] == 1
        if not first:
            conn.send(f"{tag} NO [ALERT] Too many simultaneous connections. (Failure)")
            return True
        conn.send(f"{tag} OK [CAPABILITY {CAPS}] logged in")
        return False

    run = FakeRun(tmp_path, "imap", connections=2)
    started = time.monotonic()
    with FakeServer(imap_script({"LOGIN": login}, capabilities=CAPS, messages=MESSAGES,
                                folders=["INBOX", "A", "B", "C"])) as server:
        result = run.run(server, "--json", "sync")
    assert result.code == 0, result.err
    summary = json.loads(result.out)["accounts"][0]
    assert summary["downloaded"] == 2 and len(summary["folders"]) == 4
    assert time.monotonic() - started < imap.THROTTLE_WAIT
    assert seen["logins"] == 2                          # the helper was refused once


def test_a_refused_changedsince_falls_back_to_a_full_look(tmp_path):
    """Yahoo reports HIGHESTMODSEQ but refuses CHANGEDSINCE: the folder is looked at in
    full (exit 0), never a protocol error (65) or a guess."""
    caps = "IMAP4rev1 UIDPLUS ENABLE CONDSTORE AUTH=PLAIN"

    def server(modseq: int, overrides: dict | None = None, log=None) -> FakeServer:
        answers = {"ENABLE": ["* ENABLED CONDSTORE", "{tag} OK enabled"],
                   "SELECT": ["* 2 EXISTS", "* OK [UIDVALIDITY 1] v", "* OK [UIDNEXT 3] n",
                              f"* OK [HIGHESTMODSEQ {modseq}] m",
                              "{tag} OK [READ-WRITE] done"],
                   **(overrides or {})}
        return FakeServer(imap_script(answers, capabilities=caps, messages=MESSAGES, log=log))

    run = FakeRun(tmp_path, "imap")
    with server(10) as first:
        assert run.run(first, "sync").code == 0
    log: list[str] = []
    refused = {"UID FETCH CHANGEDSINCE": ["{tag} BAD Invalid arguments (CHANGEDSINCE)"]}
    with server(11, refused, log) as second:
        result = run.run(second, "--json", "sync")
    assert result.code == 0, result.err
    assert any("CHANGEDSINCE" in line for line in log)
    summary = json.loads(result.out)["accounts"][0]
    assert (summary["downloaded"], summary["deleted_local"]) == (0, 0)
    assert len(run.stored()) == 2
