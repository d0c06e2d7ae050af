"""`mailsync status` for the always-in-step work (issue 14): placeholders waiting per
folder, folders the last run skipped and why, a running watch's connection state."""

from __future__ import annotations

import json
import time

from mailsync.state import State
from tests.conftest import run_cli, write_config
from tests.watchhelp import Watching

BIG = (b"From: g@example.org\nSubject: big\nMessage-ID: <big@example.org>\n\n"
       + b"x" * 70 + b"\n") * 100


def test_status_shows_placeholders_and_the_watch(imap_account):
    setup = imap_account(max_size=2000)
    setup.remote.append("INBOX", BIG)
    assert setup.sync().code == 0
    done = setup.acct.run("status")
    assert done.code == 0, done.err
    assert "test: folder INBOX: 1 headers-only placeholder(s) waiting" in done.out
    assert "watch running" not in done.out
    data = setup.acct.run("--json", "status").json["accounts"][0]
    assert data["watch"] is None
    assert [f["placeholders"] for f in data["folders"] if f["name"] == "INBOX"] == [1]
    with Watching(setup.acct) as w:
        w.connected("NOTIFY")
        done = setup.acct.run("status")
        assert (f"test: watch running (pid {w.proc.pid}): *: connected (NOTIFY, INBOX "
                "selected)") in done.out
        data = setup.acct.run("--json", "status").json["accounts"][0]
        assert data["watch"]["connection"] == "*: connected (NOTIFY, INBOX selected)"
        assert data["watch"]["last_result"] == "ok"
        assert w.stop() == 0
    assert "watch running" not in setup.acct.run("status").out


def test_status_shows_the_folders_the_last_run_skipped(tmp_path):
    state_dir = tmp_path / "state"
    config = write_config(tmp_path / "c.toml", "work", {
        "protocol": "imap", "host": "imap.example.org", "user": "me", "password_env": "P",
        "maildir": str(tmp_path / "Mail"), "state_dir": str(state_dir)})
    state = State(state_dir)
    state.record_run("sync", time.time(), {
        "name": "work", "protocol": "imap", "ok": False, "exit_code": 1,
        "error": "folder Drafts skipped: why", "folders": [],
        "skipped_folders": [{"name": "Drafts", "reason": "its local folder is taken"}]})
    state.close()
    done = run_cli("-c", str(config), "status")
    assert "work: folder Drafts skipped: its local folder is taken" in done.out, done.err
    data = json.loads(run_cli("-c", str(config), "--json", "status").out)
    assert data["accounts"][0]["skipped_folders"] == [
        {"name": "Drafts", "reason": "its local folder is taken"}]
