"""POP3 fetch against the real Dovecot: what a user of `mailsync fetch` sees."""

from __future__ import annotations

import mailbox
import sqlite3
import stat
import time
from collections import Counter

import pytest

from tests.corpus import make_corpus, make_message


def test_fetch_delivers_every_message_byte_identical_and_empties_the_server(make_account):
    corpus = make_corpus(500)
    # A few multi-megabyte attachments among them, as real mail has.
    corpus += [make_message(500 + i, size=4000, attachment=3_000_000) for i in range(3)]
    acct = make_account()
    acct.server.seed(acct.user, corpus)

    first = acct.run("--no-progress", "fetch")
    assert first.code == 0, first.err
    assert sorted(acct.local_messages()) == sorted(corpus)
    assert acct.server_messages() == []
    assert len(mailbox.Maildir(acct.maildir, create=False)) == len(corpus)

    again = acct.run("--json", "fetch")
    assert again.code == 0 and again.json["accounts"][0]["downloaded"] == 0
    assert len(acct.local_messages()) == len(corpus)


def test_mail_and_state_are_private_to_the_user(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(3))
    assert acct.run("fetch").code == 0
    for folder in (acct.maildir, acct.maildir / "new", acct.state_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = list((acct.maildir / "new").iterdir()) + [acct.state_dir / "state.sqlite3"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


def test_keep_leaves_mail_on_the_server_and_a_rerun_downloads_nothing(make_account):
    corpus = make_corpus(20)
    acct = make_account(keep=True)
    acct.server.seed(acct.user, corpus)
    assert acct.run("fetch").code == 0
    assert sorted(acct.local_messages()) == sorted(corpus)
    assert len(acct.server_messages()) == 20
    rerun = acct.run("--json", "fetch")
    assert rerun.json["accounts"][0]["downloaded"] == 0
    assert len(acct.local_messages()) == 20 and len(acct.server_messages()) == 20


def test_keep_days_deletes_only_what_was_downloaded_long_enough_ago(make_account):
    from mailsync.config import load_config
    from mailsync.accounts import RunOptions, run_account
    from mailsync.reporting import SilentReporter

    acct = make_account(keep=True, keep_days=14)
    acct.server.seed(acct.user, make_corpus(4))
    account = load_config(acct.config).accounts["test"]
    day = 86400.0
    start = 1_900_000_000.0
    opts = RunOptions(command="fetch")
    assert run_account(account, opts, SilentReporter(), clock=lambda: start).ok
    acct.server.seed(acct.user, [make_message(100, size=3000)])
    assert run_account(account, opts, SilentReporter(), clock=lambda: start + 10 * day).ok
    assert len(acct.server_messages()) == 5

    result = run_account(account, opts, SilentReporter(), clock=lambda: start + 15 * day)
    assert result.deleted_remote == 4 and len(acct.server_messages()) == 1
    result = run_account(account, opts, SilentReporter(), clock=lambda: start + 25 * day)
    assert result.deleted_remote == 1 and acct.server_messages() == []
    assert len(acct.local_messages()) == 5


def test_max_size_leaves_large_messages_on_the_server(make_account):
    small, big = make_message(1, size=2000), make_message(2, size=2000, attachment=200_000)
    acct = make_account(max_size="100K")
    acct.server.seed(acct.user, [small, big])
    result = acct.run("--json", "fetch")
    assert result.json["accounts"][0]["skipped"] == 1
    assert acct.local_messages() == [small] and acct.server_messages() == [big]


def test_limit_fetches_at_most_n_per_run(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(5))
    assert acct.run("fetch", "--limit", "2").code == 0
    assert len(acct.local_messages()) == 2 and len(acct.server_messages()) == 3
    assert acct.run("fetch").code == 0
    assert len(acct.local_messages()) == 5 and acct.server_messages() == []


def test_dry_run_lists_the_plan_and_changes_nothing(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(3))
    before = acct.server.server_entries(acct.user)
    result = acct.run("fetch", "--dry-run")
    assert result.code == 0
    assert result.out.count("download message") == 3 and "delete it on the server" in result.out
    assert acct.server.server_entries(acct.user) == before
    assert not acct.maildir.exists() and not (acct.state_dir / "state.sqlite3").exists()


def test_json_summary_has_the_contract_fields(make_account):
    acct = make_account()
    corpus = make_corpus(3)
    acct.server.seed(acct.user, corpus)
    summary = acct.run("--json", "fetch").json
    assert summary["exit_code"] == 0
    account = summary["accounts"][0]
    for key in ("name", "protocol", "ok", "error", "exit_code", "downloaded", "uploaded",
                "deleted_local", "deleted_remote", "flags_changed", "skipped",
                "bytes_downloaded", "seconds"):
        assert key in account
    assert account["downloaded"] == 3 and account["deleted_remote"] == 3
    assert account["bytes_downloaded"] == sum(len(m) for m in corpus)
    assert account["protocol"] == "pop3" and account["error"] is None


def test_quiet_prints_nothing_on_success(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(2))
    result = acct.run("-q", "fetch")
    assert result.code == 0 and result.out == "" and result.err == ""


def test_without_a_terminal_each_account_gets_one_summary_line(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(2))
    result = acct.run("fetch")
    assert result.out.strip().splitlines() == [result.out.strip()]
    assert "test: 2 downloaded" in result.out and result.err == ""


def test_a_second_run_while_one_holds_the_lock_exits_75_at_once(make_account):
    from mailsync.state import AccountLock

    acct = make_account()
    acct.server.seed(acct.user, make_corpus(2))
    with AccountLock(acct.state_dir, "test"):
        started = time.monotonic()
        result = acct.run("fetch")
        assert result.code == 75 and "another mailsync run" in result.err
        assert time.monotonic() - started < 10
    assert len(acct.server_messages()) == 2
    assert acct.run("fetch").code == 0 and acct.server_messages() == []


def test_a_lock_left_by_a_killed_run_does_not_block(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(2))
    proc = acct.popen("fetch", env={"MAILSYNC_CRASH_AT": "1"})
    proc.wait(timeout=60)
    assert proc.returncode == -9 and (acct.state_dir / "lock").exists()
    assert acct.run("fetch").code == 0 and acct.server_messages() == []


def test_a_concurrent_real_run_exits_75(make_account):
    acct = make_account()
    acct.server.seed(acct.user, make_corpus(300))
    first = acct.popen("fetch")
    deadline = time.monotonic() + 30
    while not (acct.state_dir / "lock").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = acct.run("fetch")
    first.wait(timeout=120)
    if first.returncode == 0 and second.code == 0:
        pytest.fail("both runs succeeded: the first finished before the second started?")
    assert second.code == 75 and first.returncode == 0
    assert len(acct.local_messages()) == 300


def test_messages_without_uidl_are_not_duplicated(make_account, mocker):
    """A server without UIDL: messages are recognised by their content hash."""
    from mailsync.drivers import pop3
    from mailsync.config import load_config
    from mailsync.accounts import RunOptions, run_account
    from mailsync.reporting import SilentReporter

    real_listing = pop3.Pop3Session.listing

    def listing_without_uidl(self):
        return [m.__class__(m.number, None, m.size) for m in real_listing(self)]

    mocker.patch.object(pop3.Pop3Session, "listing", listing_without_uidl)
    corpus = make_corpus(5)
    acct = make_account(keep=True)
    acct.server.seed(acct.user, corpus)
    account = load_config(acct.config).accounts["test"]
    for _ in range(2):
        assert run_account(account, RunOptions(command="fetch"), SilentReporter()).ok
    assert sorted(acct.local_messages()) == sorted(corpus)


def test_seen_uidls_are_recorded_in_the_state(make_account):
    acct = make_account(keep=True)
    acct.server.seed(acct.user, make_corpus(3))
    acct.run("fetch")
    db = sqlite3.connect(acct.state_dir / "state.sqlite3")
    assert db.execute("SELECT count(*) FROM pop_seen").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM pop_pending").fetchone()[0] == 0


def count_steps(acct, tmp_path) -> Counter:
    log = tmp_path / "steps.log"
    assert acct.run("fetch", env={"MAILSYNC_CRASH_COUNT": str(log)}).code == 0
    return Counter(log.read_text().split())


def test_killed_at_any_step_then_rerun_loses_and_duplicates_nothing(make_account, tmp_path):
    corpus = make_corpus(200)
    probe = make_account()
    probe.server.seed(probe.user, corpus)
    steps = sum(count_steps(probe, tmp_path).values())
    assert steps > 200
    # Every step of the first batches, then a spread over the rest of the run.
    points = sorted(set(list(range(1, 12)) + list(range(12, steps + 1, max(1, steps // 25)))
                        + [steps - 1, steps]))
    for point in points:
        acct = make_account()
        acct.server.seed(acct.user, corpus)
        killed = acct.popen("--no-progress", "fetch", env={"MAILSYNC_CRASH_AT": str(point)})
        killed.wait(timeout=120)
        assert killed.returncode == -9, f"step {point}: {killed.stderr.read().decode()}"
        rerun = acct.run("fetch")
        assert rerun.code == 0, f"step {point}: {rerun.err}"
        local = acct.local_messages()
        assert sorted(local) == sorted(corpus), f"step {point}: lost or duplicated mail"
        assert acct.server_messages() == [], f"step {point}: mail left on the server"
    assert len(points) >= 30
