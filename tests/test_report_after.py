"""report_after: under -q, cron hears of a temporary failure (69, 75) only once the
account has been failing longer than that; the exit status always tells the truth. The
commands run in-process (tests/inprocess.py): their output and exit status are the point."""

from __future__ import annotations

import socket
import sqlite3

from tests.conftest import write_config
from tests.inprocess import run_in_process

HOUR = 3600.0


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def unreachable(tmp_path, **keys):
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = {"protocol": "pop3", "host": "127.0.0.1", "port": closed_port(),
                "user": "me", "password": "pw", "maildir": str(tmp_path / "Mail"),
                "state_dir": str(tmp_path / "state"), "timeout": 5, **keys}
    return write_config(tmp_path / "config.toml", "test", settings)


def age_the_state(tmp_path, seconds: float) -> None:
    """Move every recorded run `seconds` into the past: as if the clock had run on."""
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    with db:
        db.execute("UPDATE runs SET started = started - ?, finished = finished - ?, "
                   "failing_since = failing_since - ?", (seconds, seconds, seconds))
    db.close()


def test_quiet_until_the_account_has_failed_longer_than_report_after(tmp_path):
    config = unreachable(tmp_path, report_after="6h")
    for _ in range(3):   # cron, every few minutes: silence, but the truth in the status
        result = run_in_process("-c", str(config), "-q", "run")
        assert (result.code, result.out, result.err) == (69, "", "")
    age_the_state(tmp_path, 5 * HOUR)
    result = run_in_process("-c", str(config), "-q", "run")
    assert (result.code, result.out, result.err) == (69, "", "")
    age_the_state(tmp_path, 2 * HOUR)   # failing for 7 hours now
    for _ in range(2):   # from now on, every run says so
        result = run_in_process("-c", str(config), "-q", "run")
        assert result.code == 69 and result.out == ""
        assert "account test: cannot reach 127.0.0.1" in result.err
    status = run_in_process("-c", str(config), "status")
    assert "failing since" in status.out and "exit 69" in status.out
    account = run_in_process("-c", str(config), "--json", "status").json["accounts"][0]
    assert account["failing_since"] is not None and account["last_run"]["exit_code"] == 69


def test_without_quiet_or_report_after_every_failure_is_printed(tmp_path):
    config = unreachable(tmp_path / "a")
    for _ in range(2):
        result = run_in_process("-c", str(config), "-q", "run")
        assert result.code == 69 and "cannot reach" in result.err
    config = unreachable(tmp_path / "b", report_after="6h")
    result = run_in_process("-c", str(config), "run")
    assert result.code == 69 and "cannot reach" in result.err
    quiet_json = run_in_process("-c", str(config), "-q", "--json", "run")
    assert quiet_json.code == 69 and quiet_json.err == ""
    account = quiet_json.json["accounts"][0]
    assert account["exit_code"] == 69 and account["failing_since"] is not None


def test_a_fake_clock_decides_and_a_success_ends_the_streak(make_account):
    from mailsync.config import load_config
    from mailsync.accounts import RunOptions, run_account
    from mailsync.reporting import SilentReporter

    acct = make_account(report_after="30m")
    good = load_config(acct.config).accounts["test"]
    down = good.__class__(**{**good.__dict__, "port": closed_port(), "timeout": 5.0})
    t0, opts = 2_000_000_000.0, RunOptions(command="run")

    def at(account, t):
        return run_account(account, opts, SilentReporter(), clock=lambda: t)

    first = at(down, t0)
    assert first.exit_code == 69 and first.withheld and first.failing_since == t0
    assert at(down, t0 + 20 * 60).withheld
    late = at(down, t0 + 31 * 60)
    assert late.exit_code == 69 and not late.withheld and late.failing_since == t0
    assert at(good, t0 + 40 * 60).ok
    again = at(down, t0 + 50 * 60)   # a new streak: young again
    assert again.withheld and again.failing_since == t0 + 50 * 60


def test_a_locked_account_counts_from_when_the_lock_was_taken(make_account):
    from mailsync.config import load_config
    from mailsync.accounts import RunOptions, run_account
    from mailsync.reporting import SilentReporter
    from mailsync.state import AccountLock

    acct = make_account(report_after="1h")
    account = load_config(acct.config).accounts["test"]
    with AccountLock(acct.state_dir, "test"):
        lock = acct.state_dir / "lock"
        taken = lock.stat().st_mtime
        young = run_account(account, RunOptions(command="run"), SilentReporter(),
                            clock=lambda: taken + 60)
        assert young.exit_code == 75 and young.withheld
        old = run_account(account, RunOptions(command="run"), SilentReporter(),
                          clock=lambda: taken + 2 * HOUR)
        assert old.exit_code == 75 and not old.withheld


def test_a_version_1_state_gains_the_failing_streak(tmp_path):
    from mailsync.state import State
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, command TEXT NOT NULL, started REAL "
               "NOT NULL, finished REAL NOT NULL, exit_code INTEGER NOT NULL, error TEXT, "
               "summary TEXT NOT NULL)")
    for i, code in enumerate([69, 0, 75, 69]):
        db.execute("INSERT INTO runs (command, started, finished, exit_code, summary) "
                   "VALUES ('run', ?, ?, ?, '{}')", (100.0 * i, 100.0 * i + 1, code))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    state = State(tmp_path)
    assert state.failing_since() == 200.0
    state.record_run("run", 400.0, {"exit_code": 69})
    assert state.failing_since() == 200.0
    state.record_run("run", 500.0, {"exit_code": 0})
    assert state.failing_since() is None
    state.close()
