"""watch's parts without a server: backoff, the systemd notify socket, suspend detection
during IDLE, and the Maildir watcher (inotify)."""

from __future__ import annotations

import os
import select
import socket
import time
from pathlib import Path

import pytest

from mailsync import watch
from mailsync.config import Account
from mailsync.errors import TemporaryError


def account(tmp_path: Path) -> Account:
    return Account(name="a", protocol="imap", host="h", user="u", port=993, tls="implicit",
                   maildir=tmp_path / "Mail", state_dir=tmp_path / "state")


def test_backoff_doubles_up_to_its_cap():
    b = watch.Backoff(1, 10)
    assert [b.next() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    b.reset()
    assert b.next() == 1


def test_sd_notify(tmp_path, monkeypatch):
    assert not watch.sd_notify("READY=1")   # no NOTIFY_SOCKET: nothing, no error
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "n"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "n"))
        assert watch.sd_notify("READY=1")
        assert s.recv(100) == b"READY=1"
    name = f"@mailsync-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name[1:])          # an abstract socket, as systemd may give
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert watch.sd_notify("WATCHDOG=1")
        assert s.recv(100) == b"WATCHDOG=1"


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watch.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    assert watch.watchdog_interval() == 60
    monkeypatch.setenv("WATCHDOG_PID", "1")   # meant for another process
    assert watch.watchdog_interval() is None


class QuietSession:
    def __init__(self):
        self.idles = 0
        self.calls: list[str] = []

    def idle_start(self):
        self.idles += 1
        self.calls.append("IDLE")

    def idle_wait(self, timeout):
        time.sleep(0.01)
        return []

    def idle_done(self):
        self.calls.append("DONE")

    def noop(self):
        self.calls.append("NOOP")


def test_a_suspend_during_idle_ends_the_connection(tmp_path, monkeypatch):
    clock = iter([0.0, 0.0, 0.0, 100.0])
    monkeypatch.setattr(watch, "_asleep", lambda: next(clock))
    w = watch.AccountWatch(account(tmp_path), watch.EventLog(), lock=None)
    with pytest.raises(TemporaryError, match="suspended"):
        w._idle(QuietSession(), "INBOX")


def idle_three_times(tmp_path) -> "QuietSession":
    """A watch IDLEs on a quiet session until its third IDLE, then stops."""
    w = watch.AccountWatch(account(tmp_path), watch.EventLog(), lock=None)
    session = QuietSession()
    original = session.idle_wait

    def wait(timeout):
        if session.idles >= 3:
            w.stop_event.set()
        return original(timeout)
    session.idle_wait = wait
    w._idle(session, "INBOX")
    return session


def test_idle_is_renewed_before_the_server_drops_it(tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "REIDLE", 0.05)
    session = idle_three_times(tmp_path)
    assert session.idles == 3 and watch.REIDLE < 25 * 60


def test_a_quiet_idle_sends_a_noop_every_keepalive(tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "KEEPALIVE", 0.05)
    session = idle_three_times(tmp_path)
    assert session.calls[:6] == ["IDLE", "DONE", "NOOP", "IDLE", "DONE", "NOOP"]
    assert watch.KEEPALIVE <= watch.REIDLE


@pytest.mark.parametrize("ended,answered,asked", [
    ([("EXISTS", None)], [], ["server INBOX"]),     # held back, sent with DONE's answer
    ([], [("STATUS", "Sent")], ["server Sent"]),
    ([], [], []),                                   # nothing happened: no pass
    (None, None, ["keepalive"]),                    # a session that cannot say: a pass
])
def test_a_change_answered_with_done_or_noop_asks_for_a_pass(tmp_path, monkeypatch, ended,
                                                              answered, asked):
    monkeypatch.setattr(watch, "KEEPALIVE", 0.02)
    w = watch.AccountWatch(account(tmp_path), watch.EventLog(), lock=None)
    session = QuietSession()
    session.idle_done = lambda: ended
    session.noop = lambda: (w.stop_event.set(), answered)[1]
    w._idle(session, "INBOX")
    assert w._taken() == asked


def test_a_noop_that_gets_no_answer_ends_the_connection(tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "KEEPALIVE", 0.05)
    w = watch.AccountWatch(account(tmp_path), watch.EventLog(), lock=None)
    session = QuietSession()

    def dead_link():
        raise TemporaryError("account a: timed out after 20 s waiting for the server", "")
    session.noop = dead_link
    with pytest.raises(TemporaryError, match="timed out"):
        w._idle(session, "INBOX")


class Listed:
    def __init__(self, name, flags=(), selectable=True):
        self.name, self.flags, self.selectable = name, frozenset(flags), selectable


class GmailListing:
    gmail = True

    def __init__(self, *folders):
        self.folders = list(folders)

    def list_folders(self, with_status=False):
        return self.folders


GMAIL = [Listed("INBOX"), Listed("[Gmail]", ["\\Noselect"], False),
         Listed("[Gmail]/Alle Nachrichten", ["\\All", "\\HasNoChildren"]),
         Listed("[Gmail]/Sent Mail", ["\\Sent"])]


def test_gmail_all_mail_is_watched_beside_inbox_by_default(tmp_path):
    acct = account(tmp_path)
    assert acct.watch_folders == ()                       # not set in the config
    assert watch.idle_folders(acct, GmailListing(*GMAIL)) == [
        "INBOX", "[Gmail]/Alle Nachrichten"]              # found by SPECIAL-USE \\All
    no_special_use = [Listed("INBOX"), Listed("[Google Mail]/All Mail")]
    assert watch.idle_folders(acct, GmailListing(*no_special_use)) == [
        "INBOX", "[Google Mail]/All Mail"]
    assert watch.idle_folders(acct, GmailListing(Listed("INBOX"))) == ["INBOX"]


def test_gmail_all_mail_by_the_provider_preset_and_watch_folders_chooses(tmp_path):
    from dataclasses import replace

    class Plain(GmailListing):
        gmail = False                                      # no X-GM-EXT-1 seen
    acct = account(tmp_path)
    assert watch.idle_folders(acct, Plain(*GMAIL)) == ["INBOX"]
    preset = replace(acct, provider="gmail")
    assert watch.idle_folders(preset, Plain(*GMAIL)) == ["INBOX", "[Gmail]/Alle Nachrichten"]
    chosen = replace(preset, watch_folders=("INBOX", "Work"))
    assert watch.idle_folders(chosen, Plain(*GMAIL)) == ["INBOX", "Work"]


def test_the_maildir_watcher_sees_messages_and_new_folders(tmp_path):
    acct = account(tmp_path)
    for sub in ("cur", "new", "tmp"):
        (acct.maildir / sub).mkdir(parents=True)
    w = watch.LocalWatcher(acct)
    try:
        def changed() -> bool:
            ready, _, _ = select.select([w.fd], [], [], 5)
            return bool(ready) and w.changed()

        (acct.maildir / "tmp" / "m1").write_text("x")
        os.rename(acct.maildir / "tmp" / "m1", acct.maildir / "new" / "m1")
        assert changed()
        os.rename(acct.maildir / "new" / "m1", acct.maildir / "cur" / "m1:2,S")
        assert changed()
        for sub in ("cur", "new", "tmp"):
            (acct.maildir / ".Projects" / sub).mkdir(parents=True)
        assert changed()                   # a new folder; its new/ and cur/ now watched
        while select.select([w.fd], [], [], 0.2)[0]:
            w.changed()
        (acct.maildir / ".Projects" / "new" / "m2").write_text("y")
        assert changed()
    finally:
        w.close()


def test_one_tls_context_per_trust_setting_so_a_long_watch_does_not_grow(tmp_path):
    import subprocess
    from dataclasses import replace

    from mailsync import secure
    ca = tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=test ca", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(ca)], check=True, capture_output=True)
    acct = replace(account(tmp_path), ca_file=ca)
    first = secure.tls_context(acct)
    assert secure.tls_context(acct) is first                  # every pass: the same one
    assert secure.tls_context(replace(acct, ca_file=None)) is not first
    os.utime(ca, ns=(1, 1))                                   # the file changed: read again
    assert secure.tls_context(acct) is not first
