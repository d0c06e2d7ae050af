"""Folders in parallel over several connections (`connections`): the same result as one
connection, a second login only when there is work, a refused or cut extra connection
costs nothing but time, and the pool and the shared progress view behave."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

from mailsync.pool import Pool
from mailsync.imapsync.account import SharedReporter
from tests.corpus import make_corpus
from tests.proxy import CutProxy
from tests.test_links import (assert_clean_failure, assert_converged, assert_nothing_lost,
                              assert_settles, seed_server, via)

SEED = {
    "INBOX": (make_corpus(20), ""),
    "Work": (make_corpus(12, seed=2), "S"),
    "Lists": (make_corpus(12, seed=3), ""),
    "Archive/2025": (make_corpus(10, seed=4), "FS"),
}


def account(imap_account):
    s = imap_account(timeout=5)
    return s, seed_server(s, SEED)


@contextlib.contextmanager
def slow_first_connection(dovecot, **faults):
    """A proxy (with *faults*) in front of one that slows only the first connection, so
    the first folder keeps it busy while a second connection takes the other folders."""
    with CutProxy(dovecot.host, dovecot.imaps_port, trickle=(4096, 0.02),
                  max_faults=1) as slow:
        with CutProxy(slow.host, slow.port, **faults) as front:
            yield front


def test_two_connections_sync_every_folder_like_one(imap_account, make_account, dovecot):
    s, expected = account(imap_account)
    with slow_first_connection(dovecot) as proxy:
        result = via(make_account, s, proxy, connections=2).run("--json", "sync")
        second = proxy._conns[1].bytes["down"]
    assert result.code == 0, result.err
    assert proxy.connections == 2 and second > 50_000    # it carried folders
    summary = result.json["accounts"][0]
    assert summary["downloaded"] == sum(len(b) for b in expected.values())
    assert {f["name"] for f in summary["folders"]} == set(SEED)
    assert_converged(s, expected)
    assert_settles(s, expected)


def test_folders_are_reported_in_the_same_order_with_one_or_two_connections(
        imap_account, make_account, dovecot):
    order = []
    for connections in (1, 2):
        s, _ = account(imap_account)
        with CutProxy(dovecot.host, dovecot.imaps_port) as proxy:
            result = via(make_account, s, proxy, connections=connections).run("--json", "sync")
        assert result.code == 0, result.err
        order.append([f["name"] for f in result.json["accounts"][0]["folders"]])
    assert order[0] == order[1] and set(order[0]) == set(SEED)


def test_with_several_connections_the_folders_with_most_mail_start_first():
    from mailsync.folders import FolderPairing
    from mailsync.drivers.imap import FolderStatus
    from mailsync.imapsync.account import _largest_first

    def pairing(name, messages):
        status = None if messages is None else FolderStatus(1, messages + 1, messages)
        return FolderPairing(name, name, None, True, listed_status=status)
    pairings = [pairing("Lists", 10), pairing("Unknown", None), pairing("Old", 10),
                pairing("INBOX", 400), pairing("Work", 30)]
    assert [pairings[i].name for i in _largest_first(pairings)] == [
        "INBOX", "Work", "Lists", "Old", "Unknown"]


def test_one_connection_when_configured(imap_account, make_account, dovecot):
    s, expected = account(imap_account)
    with CutProxy(dovecot.host, dovecot.imaps_port) as proxy:
        result = via(make_account, s, proxy, connections=1).run("sync")
    assert result.code == 0, result.err
    assert proxy.connections == 1
    assert_converged(s, expected)


def test_a_run_with_nothing_to_do_logs_in_once(imap_account, make_account, dovecot):
    s, expected = account(imap_account)
    assert s.sync().code == 0
    old = time.time() - 60               # the folders' directories look settled
    for folder in SEED:
        for sub in ("new", "cur"):
            os.utime(s.local.path(folder) / sub, (old, old))
    assert s.sync().code == 0            # records the settled directories
    with CutProxy(dovecot.host, dovecot.imaps_port) as proxy:
        result = via(make_account, s, proxy, connections=4).run("--json", "sync")
    assert result.code == 0, result.err
    assert proxy.connections == 1
    assert result.json["accounts"][0]["downloaded"] == 0


def test_refused_extra_connection_still_syncs_everything(imap_account, make_account,
                                                         dovecot):
    s, expected = account(imap_account)
    # Every connection after the first is closed before the server's greeting.
    with CutProxy(dovecot.host, dovecot.imaps_port, cut_after_bytes=0,
                  first_fault=2) as proxy:
        result = via(make_account, s, proxy, connections=3).run("-v", "sync")
    assert result.code == 0, result.err
    assert proxy.connections >= 2 and proxy.cuts >= 1
    assert "fewer connections" in result.err
    assert_converged(s, expected)


def test_extra_connection_cut_mid_transfer_exits_75_and_nothing_is_lost(
        imap_account, make_account, dovecot):
    s, expected = account(imap_account)
    with slow_first_connection(dovecot, cut_after_bytes=6_000, first_fault=2) as proxy:
        result = via(make_account, s, proxy, connections=2).run("sync")
    assert proxy.connections == 2 and proxy.cuts == 1
    assert_clean_failure(result, 75)
    assert_nothing_lost(s, expected)
    assert_settles(s, expected)


# The pool on its own ------------------------------------------------------------------

def test_pool_returns_outputs_in_job_order_and_opens_helpers_only_when_busy():
    opened, closed = [], []

    def open_helper():
        opened.append(threading.current_thread().name)
        return "helper"

    pool = Pool(3, open_helper, lambda res, ok: closed.append(ok), lambda exc: None)
    outs = pool.run(list(range(10)), lambda job, res, busy: job * 2, "own")
    assert outs == [j * 2 for j in range(10)]
    assert opened == [] and closed == []        # nobody said busy: one thread did all

    seen = set()
    lock = threading.Lock()

    def work(job, res, busy):
        busy()
        time.sleep(0.01)                 # long enough for a helper to log in
        with lock:
            seen.add(res)
        return job

    pool = Pool(3, open_helper, lambda res, ok: closed.append(ok), lambda exc: None)
    assert pool.run(list(range(50)), work, "own") == list(range(50))
    assert len(opened) == 2 and closed == [True, True] and seen == {"own", "helper"}


def test_pool_stops_handing_out_jobs_after_a_failure_and_raises_it():
    started = []

    def work(job, res, busy):
        started.append(job)
        if job == 2:
            raise RuntimeError("boom")
        return job

    pool = Pool(1, lambda: None, lambda res, ok: None, lambda exc: None)
    with pytest.raises(RuntimeError, match="boom"):
        pool.run(list(range(6)), work, "own")
    assert started == [0, 1, 2]


def test_pool_helper_that_cannot_connect_leaves_the_work_to_the_others():
    failures = []

    def open_helper():
        raise ConnectionRefusedError("too many connections")

    def work(job, res, busy):
        busy()
        time.sleep(0.01)
        return res

    pool = Pool(4, open_helper, lambda res, ok: None, failures.append)
    assert pool.run(list(range(5)), work, "own") == ["own"] * 5
    assert failures and all(isinstance(e, ConnectionRefusedError) for e in failures)


class Recorder:
    tracing = False

    def __init__(self):
        self.calls = []

    def transfer_started(self, label, messages, nbytes):
        self.calls.append(("started", label, messages, nbytes))

    def transferred(self, nbytes, stored=None):
        self.calls.append(("transferred", nbytes, stored))

    def transfer_finished(self):
        self.calls.append(("finished",))

    def warn(self, text):
        self.calls.append(("warn", text))

    def detail(self, text):
        self.calls.append(("detail", text))

    def trace(self, direction, line):
        self.calls.append(("trace", direction, line))


def test_folders_transferring_together_each_report_their_own_transfer():
    # The reporter adds them up (one bar for the account, see tests/test_progress.py);
    # the shared reporter only keeps the calls apart and passes the stored size on.
    rec = Recorder()
    shared = SharedReporter(rec, "acct")
    shared.transfer_started("acct/INBOX", 10, 1000)
    shared.transferred(100)
    shared.transfer_started("acct/Work", 5, 500)
    shared.transferred(50, 48)
    shared.transfer_finished()
    shared.transfer_finished()
    assert rec.calls == [
        ("started", "acct/INBOX", 10, 1000),
        ("transferred", 100, None),
        ("started", "acct/Work", 5, 500),
        ("transferred", 50, 48),
        ("finished",),
        ("finished",),
    ]


def test_the_run_after_a_sync_skips_every_unchanged_folder(imap_account, tmp_path):
    s, expected = account(imap_account)
    assert s.sync().code == 0           # the initial sync, which fills every folder
    steps = tmp_path / "steps"          # a folder looked at in full ends with folder-done
    again = s.sync(env={"MAILSYNC_CRASH_COUNT": str(steps)})
    assert again.code == 0, again.err
    assert "folder-done" not in (steps.read_text() if steps.exists() else "")
    assert_converged(s, expected)


def test_a_local_change_right_after_a_sync_is_seen_by_the_next(imap_account):
    s, expected = account(imap_account)
    assert s.sync().code == 0
    s.local.set_flags("Work", SEED["Work"][0][0], "FS")   # at once, no pause
    assert s.sync().code == 0
    assert s.remote.flags_by_body("Work")[SEED["Work"][0][0]] == "FS"


def test_pool_never_drops_a_job_that_a_helper_thread_ended_abruptly():
    class Abrupt(BaseException):
        pass

    def work(job, res, busy):
        busy()
        time.sleep(0.01)
        if res == "helper":
            raise Abrupt()
        return job

    pool = Pool(2, lambda: "helper", lambda res, ok: None, lambda exc: None)
    with pytest.raises(Abrupt):
        pool.run(list(range(10)), work, "own")
