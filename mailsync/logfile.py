"""One line per event: for `--log-file PATH` / `log_file`, and watch's stderr log.

A line is ``TIME ACCOUNT FOLDER WHAT key=value...``: an ISO 8601 local time with
its offset, the account, the folder ("-" for the whole account), what happened
(sync, fetch, watch, connect, reconnect, error, stop ...) and its counts, nonzero
ones only; a free text goes last as ``note="..."`` or ``error="..."``. The file is opened
in append mode for each line, so logrotate may move it at any time (no
copytruncate needed, no signal). Under systemd (JOURNAL_STREAM set) the stderr copy
leaves the time out: the journal stamps each line itself.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable, TextIO

from mailsync.results import COUNTS


def format_line(account: str, folder: str | None, what: str, counts: dict | None = None,
                error: str | None = None, when: datetime | None = None,
                with_time: bool = True, note: str | None = None) -> str:
    parts = []
    if with_time:
        parts.append((when or datetime.now().astimezone()).isoformat(timespec="seconds"))
    parts += [account or "-", folder or "-", what]
    for key, value in (counts or {}).items():
        if value:
            parts.append(f"{key}={value}")
    for key, text in (("note", note), ("error", error)):
        if text:
            parts.append(f"{key}=" + json.dumps(" ".join(text.split()), ensure_ascii=False))
    return " ".join(parts)


def result_counts(result) -> dict:
    """The counts of an AccountResult or FolderResult, in the summary's order."""
    return {name: getattr(result, name, 0) for name in COUNTS}


class EventLog:
    """Where event lines go: any log files, and stderr when `to_stderr`."""

    def __init__(self, paths: Iterable[Path] = (), to_stderr: bool = False,
                 stream: TextIO | None = None) -> None:
        self.paths = [Path(p).expanduser() for p in paths]
        self.to_stderr = to_stderr
        self.stream = stream
        self.journal = bool(os.environ.get("JOURNAL_STREAM"))
        self._lock = threading.Lock()

    def event(self, account: str, folder: str | None, what: str, counts: dict | None = None,
              error: str | None = None, paths: Iterable[Path] = (),
              note: str | None = None) -> None:
        """Write one event line; a log file that cannot be written is said once on
        stderr, never fatal."""
        now = datetime.now().astimezone()
        line = format_line(account, folder, what, counts, error, now, note=note)
        with self._lock:
            for path in [*self.paths, *(Path(p).expanduser() for p in paths)]:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(line + "\n")
                except OSError as exc:
                    print(f"mailsync: cannot write log file {path}: {exc.strerror or exc}",
                          file=sys.stderr)
            if self.to_stderr:
                out = self.stream or sys.stderr
                text = line if not self.journal else format_line(
                    account, folder, what, counts, error, now, with_time=False, note=note)
                try:
                    out.write(text + "\n")
                    out.flush()
                except (OSError, ValueError):
                    pass

    def run_result(self, result, what: str, paths: Iterable[Path] = ()) -> None:
        """An account's run: one line per folder that moved something or failed, then
        one for the account (its totals)."""
        paths = list(paths)
        for folder in result.folders or []:
            counts = result_counts(folder)
            if not folder.ok or any(counts.values()):
                self.event(result.name, folder.name, what if folder.ok else f"{what}-failed",
                           counts, None if folder.ok else folder.error, paths)
        self.event(result.name, None, what if result.ok else f"{what}-failed",
                   result_counts(result), None if result.ok else result.error, paths)


# --log-file on the command line: kept here until the run's results are logged.
_cli_paths: list[Path] = []


def remember_cli_path(ctx, param, value) -> None:
    """click callback of --log-file (before or after the command)."""
    if value and Path(value) not in _cli_paths:
        _cli_paths.append(Path(value))


def cli_paths() -> list[Path]:
    return list(_cli_paths)


def log_results(accounts, results, options) -> None:
    """A run/fetch/sync's results into --log-file and each account's log_file (a dry
    run changes nothing, so it logs nothing)."""
    if getattr(options, "dry_run", False):
        return
    log = EventLog(cli_paths())
    by_name = {a.name: a for a in accounts}
    for result in results:
        account = by_name.get(result.name)
        own = [account.log_file] if account is not None and account.log_file else []
        if own or log.paths:
            what = "fetch" if result.protocol == "pop3" else "sync"
            log.run_result(result, what, own)
