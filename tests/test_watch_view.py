"""`mailsync watch` as a user sees it: on a terminal a live table (per account: state, last
sync, next action), rendered through a pseudo-terminal by the pyte emulator; off a
terminal one log line per sync and no escape codes."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import threading
import time

import pytest

from mailsync import watchview
from tests.conftest import cli_command, cli_env
from tests.watchhelp import Watching, wait_until

pyte = pytest.importorskip("pyte") if not os.environ.get("CI") else __import__("pyte")

COLUMNS, ROWS = 120, 30
A = b"From: a@example.org\nSubject: one\nMessage-ID: <view-one@example.org>\n\nfirst\n"


def test_the_rows_say_state_last_sync_and_next_action():
    now = 1_000_000.0
    infos = [
        {"account": "work", "protocol": "imap", "syncing": False,
         "connection": "*: connected (NOTIFY, INBOX selected)", "last_sync": now - 125,
         "last_result": "ok", "last_counts": {"downloaded": 2}, "retry_at": None,
         "next_full_sync": now + 3540},
        {"account": "home", "protocol": "imap", "syncing": False,
         "connection": "INBOX: reconnecting in 4s", "last_sync": now - 3,
         "last_result": "exit 75: account home: connection refused",
         "retry_at": now + 8, "next_full_sync": now + 3600},
        {"account": "pop", "protocol": "pop3", "syncing": True, "connection": "starting",
         "last_sync": None, "next_full_sync": None},
    ]
    assert watchview.rows(infos, now) == [
        ("home", "INBOX: reconnecting in 4s", "exit 75, 3 s ago", "retry in 8 s"),
        ("pop", "syncing", "-", "sync running"),
        ("work", "connected (NOTIFY, INBOX selected)", "ok (2 downloaded), 2 min ago",
         "waiting for changes; full sync in 59 min"),
    ]
    infos[2].update(syncing=False, last_sync=now, last_result="ok", next_full_sync=now + 300)
    assert watchview.rows(infos[2:], now)[0][2:] == ("ok, now ago", "fetch in 5 min")


def test_ago_reads_like_a_span():
    assert [watchview.ago(s) for s in (0, 1.5, 12, 61, 3599, 3600, 3900)] == [
        "now", "now", "12 s", "1 min", "59 min", "1 h", "1 h 5 min"]


class OnTerminal:
    """`mailsync watch` with stdout and stderr on a pseudo-terminal; the screen kept up
    to date by a reader thread."""

    def __init__(self, config) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.proc = subprocess.Popen(cli_command("-c", str(config), "watch"),
                                     stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                     env=cli_env({"TERM": "xterm-256color",
                                                  "COLUMNS": str(COLUMNS),
                                                  "LINES": str(ROWS)}))
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:          # EIO: the last writer closed the terminal
                return
            if not data:
                return
            with self.lock:
                self.stream.feed(data)

    def text(self) -> str:
        with self.lock:
            return "\n".join(line.rstrip() for line in self.screen.display)

    def row(self, account: str) -> str:
        return next((line for line in self.text().splitlines()
                     if line.startswith(account + " ")), "")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.reader.join(10)
            os.close(self.master)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def test_on_a_terminal_watch_shows_each_accounts_state_last_sync_and_next(imap_account):
    s = imap_account()
    name = s.acct.name
    term = OnTerminal(s.acct.config)
    try:
        wait_until(lambda: "connected (NOTIFY" in term.row(name)
                   and "ok, " in term.row(name), "the account's row, connected and synced",
                   timeout=60, output=term.text)
        header = next(line for line in term.text().splitlines() if "last sync" in line)
        assert header.split() == ["account", "state", "last", "sync", "next"]
        assert "full sync in 59 min" in term.row(name) or \
            "full sync in 1 h" in term.row(name)
        s.remote.append("INBOX", A)
        wait_until(lambda: "1 downloaded" in term.row(name), "the delivery in the row",
                   timeout=60, output=term.text)
        # the event lines scroll above the table, not through it
        lines = term.text().splitlines()
        events = [i for i, line in enumerate(lines) if f" {name} - sync " in line]
        table = next(i for i, line in enumerate(lines) if "last sync" in line)
        assert events and max(events) < table, term.text()
        assert s.local.bodies() == [A]
        assert term.stop() == 0, term.text()
        assert "stopped" in term.row(name), term.text()
    finally:
        term.kill()


def test_off_a_terminal_each_sync_is_one_log_line(imap_account):
    s = imap_account()
    with Watching(s.acct) as w:
        w.connected("NOTIFY")
        w.wait(lambda: w.status()["syncs"] >= 1, "first pass")
        s.remote.append("INBOX", A)
        w.wait(lambda: s.local.bodies() == [A], "the delivery")
        time.sleep(0.5)
        syncs = w.status()["syncs"]
        assert w.stop() == 0, w.output()
    out = w.output()
    assert "\x1b" not in out                                  # no escape codes
    account_lines = [line for line in out.splitlines()
                     if f" {s.acct.name} - sync" in line]
    assert len(account_lines) in (syncs, syncs + 1)          # + a pass SIGTERM ended
    assert any("downloaded=1" in line for line in account_lines)
