"""`--log-file PATH` / `log_file`: one line per event -- time, account, folder, what,
counts (issue 14, logging)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from mailsync.logfile import EventLog, format_line

LINE = re.compile(r"^(\S+) (\S+) (\S+) (\S+)((?: \w+=\S+)*)( error=\".*\")?$")


def test_line_format():
    when = datetime(2026, 12, 6, 1, 2, 3, tzinfo=timezone.utc)
    assert format_line("work", "INBOX", "sync", {"downloaded": 2, "uploaded": 0},
                       when=when) == "2026-12-06T01:02:03+00:00 work INBOX sync downloaded=2"
    assert format_line("work", None, "sync-failed", {}, "bad\n  thing", when=when) == \
        '2026-12-06T01:02:03+00:00 work - sync-failed error="bad thing"'


def test_journal_lines_leave_the_time_to_the_journal(monkeypatch, capsys):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    EventLog(to_stderr=True).event("work", "INBOX", "sync", {"downloaded": 1})
    assert capsys.readouterr().err == "work INBOX sync downloaded=1\n"


def test_sync_and_fetch_log_one_line_per_event(imap_account, make_account, dovecot, tmp_path):
    setup = imap_account(log_file=str(tmp_path / "own.log"))
    setup.remote.append("INBOX", b"Subject: a\n\nbody\n")
    setup.remote.create("Work")
    setup.remote.append("Work", b"Subject: b\n\nbody\n")
    cli_log = tmp_path / "cli.log"
    done = setup.acct.run("--log-file", str(cli_log), "sync")
    assert done.code == 0, done.err
    for path in (cli_log, tmp_path / "own.log"):
        lines = path.read_text().splitlines()
        assert sorted(LINE.match(line).group(2, 3, 4) for line in lines) == [
            ("test", "-", "sync"), ("test", "INBOX", "sync"), ("test", "Work", "sync")]
        assert lines[-1].endswith(" test - sync downloaded=2 bytes_downloaded=34")
        datetime.fromisoformat(lines[0].split()[0])
    # a failure is a line too; a dry run is not
    done = setup.acct.run("sync", "--dry-run", "--log-file", str(cli_log))
    assert done.code == 0 and len(cli_log.read_text().splitlines()) == 3
    pop = make_account("pop3", port=1, log_file=str(tmp_path / "pop.log"), timeout=5)
    done = pop.run("fetch")
    assert done.code != 0
    (line,) = (tmp_path / "pop.log").read_text().splitlines()
    m = LINE.match(line)
    assert m and m.group(2, 3, 4) == ("test", "-", "fetch-failed") and m.group(6)
