"""Progress and summaries as a user sees them: on a terminal (a pseudo-terminal rendered
by the pyte terminal emulator), and without one."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading

import pytest

from mailsync.cli.ui import Board, account_line, byte_pair, folder_line, shorten
from tests.conftest import cli_command, cli_env
from tests.corpus import make_corpus, make_message

pyte = pytest.importorskip("pyte") if not os.environ.get("CI") else __import__("pyte")

COLUMNS, ROWS = 80, 30
SUMMARY = re.compile(r"^(\S+): (\d+) downloaded \(([\d.]+ [KMG]?B)\)")


def on_terminal(args: list[str], columns: int = COLUMNS, rows: int = ROWS):
    """Run mailsync with stdout and stderr on a pseudo-terminal of this size; return its
    exit code and the final screen (pyte), as a user would see it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(cli_command(*args), stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env=cli_env({"TERM": "xterm-256color",
                                                       "COLUMNS": str(columns),
                                                       "LINES": str(rows)}))
    os.close(slave)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    raw = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:          # EIO: the last writer closed the terminal
            break
        if not data:
            break
        raw += data
        stream.feed(data)
    code = proc.wait(timeout=60)
    os.close(master)
    return code, [line.rstrip() for line in screen.display], raw


def seeded_folders(imap_account, **keys):
    """An IMAP account with several server folders of different sizes (with a few
    large messages), never synced."""
    s = imap_account(**keys)
    server, user = s.acct.server, s.acct.user
    sizes = {"INBOX": 70, "Archive": 45, "Lists": 30, "Work": 18, "Sent": 9}
    for i, (folder, n) in enumerate(sizes.items()):
        mail = make_corpus(n, seed=40 + i, big_every=15, max_attachment=300_000)
        if folder != "INBOX":
            s.remote.create(folder)
        server.seed(user, mail, folder=folder)
    return s, sum(sizes.values())


def check_final_screen(lines: list[str], account: str, messages: int) -> str:
    """The final screen's account bar at 100 % agreeing with the summary; no folder
    left beneath it, no line over the width. Returns the bar's line."""
    text = "\n".join(lines)
    assert all(len(line) <= COLUMNS for line in lines)
    # A line that reaches the last column may have wrapped: none may.
    assert not [line for line in lines if len(line) >= COLUMNS], text
    bars = [line for line in lines if "msgs" in line]
    assert len(bars) == 1, text                       # one bar for the account
    bar = bars[0]
    assert bar.startswith(account + " ") and bar.endswith(" done"), text
    assert " 100% " in bar, text
    assert "└" not in text, text                      # the folders in flight are gone
    summary, = [m for line in lines if (m := SUMMARY.match(line))]
    assert summary.group(1) == account and int(summary.group(2)) == messages, text
    assert f" {messages}/{messages} msgs " in bar, text
    total = summary.group(3)                          # "12.3 MB"
    value, unit = total.split()
    assert f" {value}/{value} {unit} " in bar, (total, bar)
    return bar


def test_a_two_connection_sync_of_several_folders_ends_with_one_true_bar(imap_account):
    s, total = seeded_folders(imap_account, connections=2)
    code, lines, raw = on_terminal(["-c", str(s.acct.config), "sync"])
    assert code == 0, "\n".join(lines)
    check_final_screen(lines, "test", total)


def test_pop3_bar_counts_the_bytes_the_summary_counts(make_account):
    """The server counts CRLF line ends, the Maildir stores LF: the bar used to end at
    the server's figure (171.7 MB) while the summary gave the stored one (169.4 MB)."""
    acct = make_account()
    mail = make_corpus(60, seed=5, big_every=10, max_attachment=200_000)
    acct.server.seed(acct.user, mail)
    code, lines, _ = on_terminal(["-c", str(acct.config), "fetch"])
    assert code == 0, "\n".join(lines)
    bar = check_final_screen(lines, "test", 60)
    stored = sum(len(m) for m in mail)
    assert stored < sum(len(m.replace(b"\n", b"\r\n")) for m in mail)   # it differs
    assert byte_pair(stored, stored) in bar


def test_a_narrow_terminal_gets_no_wrapped_line(imap_account):
    s, total = seeded_folders(imap_account, connections=2)
    code, lines, _ = on_terminal(["-c", str(s.acct.config), "sync"], columns=60)
    assert code == 0
    assert all(len(line) < 60 for line in lines)
    bar, = [line for line in lines if "msgs" in line]
    assert "100%" in bar and f"{total}/{total} msgs" in bar


def test_without_a_terminal_only_the_summary_is_printed(imap_account):
    s, total = seeded_folders(imap_account, connections=2)
    result = s.acct.run("sync")
    assert result.code == 0 and result.err == ""
    line, = result.out.splitlines()
    assert SUMMARY.match(line).group(2) == str(total)


def test_verbose_adds_a_line_per_folder_with_its_counts(imap_account):
    s, total = seeded_folders(imap_account, connections=2)
    result = s.acct.run("sync", "-v")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert SUMMARY.match(lines[0]).group(2) == str(total)
    folders = {m.group(1): int(m.group(2)) for line in lines[1:]
               if (m := re.match(r"^  test/(\S+): (\d+) downloaded \(", line))}
    assert folders == {"INBOX": 70, "Archive": 45, "Lists": 30, "Work": 18, "Sent": 9}


# The board's arithmetic, threads as the folder workers use it -------------------------

def test_board_names_the_folders_in_flight_beneath_the_account_and_drops_them_when_done():
    board = Board()
    try:
        board.started("acct", "INBOX", 10, 10_000)
        board.transferred(1000, 990)
        other = threading.Thread(target=board.started, args=("acct", "Lists/python", 4, 800))
        other.start()
        other.join()
        lines = str(board._render()).splitlines()
        assert lines[0].startswith("acct ") and " 1/14 msgs " in lines[0]
        assert lines[1:] == ["  └ INBOX 1/10 msgs 990 B", "  └ Lists/python 0/4 msgs 0 B"]
        board.finished()                            # INBOX, on this thread, ends early
        lines = str(board._render()).splitlines()
        assert lines[1:] == ["  └ Lists/python 0/4 msgs 0 B"]
        assert " 1/5 msgs " in lines[0]             # what INBOX did not send is off the total
    finally:
        board.stop()


def test_board_adds_up_folders_on_several_threads_and_ends_at_the_stored_total():
    board = Board()
    try:
        def folder(name: str, sizes: list[int], stop_after: int | None = None):
            board.started("acct", name, len(sizes), sum(sizes))
            for i, size in enumerate(sizes):
                if stop_after is not None and i == stop_after:
                    break                       # the link was cut: the rest never came
                board.transferred(size, size - 10)   # stored with LF: 10 bytes fewer
            board.finished()

        threads = [threading.Thread(target=folder, args=("INBOX", [1000] * 30)),
                   threading.Thread(target=folder, args=("Work", [500] * 20, 5))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        bar = board._bars[-1]
        assert (bar.done, bar.messages) == (35, 35)            # 30 + the 5 that came
        assert bar.stored == bar.nbytes == 30 * 990 + 5 * 490
        assert "└" not in str(board._render())                 # no folder left in flight
    finally:
        board.stop()


def test_lines_fit_the_width_and_keep_both_ends_of_a_long_name():
    line = account_line("a-very-long-account-name@example.com", 1999, 2000, 168_000_000,
                        169_400_000, "eta 0:01", 80)
    assert len(line) < 80 and "2000 msgs" in line and "168.0/169.4 MB" in line
    assert line.startswith("a-very-") and ".com " in line
    assert len(folder_line("Archive/" + "x" * 100 + "/2026", 3, 9, 1234, 80)) < 80
    assert shorten("Archive/2026/very/deep/folder", 15).endswith("folder")


def test_a_new_message_in_a_sent_folder_is_synced_after_the_bar(imap_account):
    # A second sync that downloads one message draws a bar of 1 and ends at 100 % too.
    s, total = seeded_folders(imap_account, connections=2)
    assert s.sync().code == 0
    s.acct.server.seed(s.acct.user, [make_message(999, size=3000)], folder="Sent")
    code, lines, _ = on_terminal(["-c", str(s.acct.config), "sync"])
    assert code == 0
    check_final_screen(lines, "test", 1)


def test_upgrading_placeholders_is_on_the_bar_as_in_the_summary(imap_account):
    # --full fetches the whole of messages first stored headers-only: downloads in the
    # summary, so on the bar too.
    s = imap_account(max_size="20K")
    big = make_corpus(6, seed=8, big_every=1, max_attachment=120_000)
    s.acct.server.seed(s.acct.user, big)
    assert s.sync().code == 0
    code, lines, _ = on_terminal(["-c", str(s.acct.config), "sync", "--full"])
    assert code == 0, "\n".join(lines)
    placeholders = sum(len(m) > 20 * 1024 for m in big)
    assert placeholders >= 3
    check_final_screen(lines, "test", placeholders)
