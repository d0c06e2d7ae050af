"""Everything the user sees: progress bars, summaries, plans, tables, errors.

The only module that imports rich, and only when it draws (a progress bar on a
terminal, a table on a terminal): cron and scripts never pay for it. Progress is
drawn only when stderr is a terminal; without one each account gets one summary
line; --quiet prints errors only; --json prints one object on stdout and nothing
else there.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from mailsync.model import AccountResult


@dataclass(frozen=True)
class OutputOptions:
    quiet: bool = False
    verbose: int = 0
    json: bool = False
    progress: bool = True


class Ui:
    """A Reporter for the engines plus the printing the CLI needs."""

    def __init__(self, options: OutputOptions) -> None:
        self.options = options
        self.tracing = options.verbose >= 2
        self._progress = None     # a rich Progress while a bar is drawn
        self._task = None
        self._done = 0
        self._total = 0

    def _err(self, text: str) -> None:
        text = printable(text)
        if self._progress is not None:   # print above the live bar, not through it
            from rich.markup import escape
            self._progress.console.print(escape(text), highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    # Reporter -------------------------------------------------------------------------
    def _show_progress(self) -> bool:
        o = self.options
        return o.progress and not o.quiet and sys.stderr.isatty()

    def transfer_started(self, label: str, messages: int, nbytes: int) -> None:
        if not self._show_progress():
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)
        self._done, self._total = 0, messages
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[count]}"), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self._task = self._progress.add_task(escape(label), total=nbytes or None,
                                             count=f"0/{messages} msgs")
        self._progress.start()

    def transferred(self, nbytes: int) -> None:
        if self._progress is None or self._task is None:
            return
        self._done += 1
        self._progress.update(self._task, advance=nbytes,
                              count=f"{self._done}/{self._total} msgs")

    def transfer_finished(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._task = None, None

    def warn(self, text: str) -> None:
        if not self.options.quiet:
            self._err(f"mailsync: warning: {text}")

    def detail(self, text: str) -> None:
        if self.options.verbose >= 1 and not self.options.quiet:
            self._err(text)

    def trace(self, direction: str, line: str) -> None:
        if self.tracing:
            self._err(f"{'>' if direction == 'C' else '<'} {line}")

    # Results --------------------------------------------------------------------------
    def error(self, text: str) -> None:
        self._err(f"mailsync: {text}")

    def results(self, results: list[AccountResult], exit_code: int) -> None:
        for r in results:
            if not r.ok:
                self.error(r.error or "failed")
        if self.options.json:
            payload = {"exit_code": exit_code, "accounts": [r.as_json() for r in results]}
            print(json.dumps(payload, indent=None, ensure_ascii=False))
            return
        if self.options.quiet:
            return
        for r in results:
            if r.dry_run:
                self.plan(r)
            elif r.ok:
                print(printable(summary_line(r)))

    def plan(self, r: AccountResult) -> None:
        print(printable(f"{r.name}: dry run, nothing changed; the plan:"))
        for line in r.plan or ["nothing to do"]:
            print(printable(f"  {line}"))

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        if self.options.json:
            print(json.dumps({"title": title, "columns": columns, "rows": rows},
                             ensure_ascii=False))
            return
        if not sys.stdout.isatty():
            # Scripts read this: tab-separated, nothing cut short to fit a width.
            for row in [columns] + rows:
                print("\t".join(printable(str(v)).replace("\t", "\\t") for v in row))
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
        table = Table(title=title, title_justify="left")
        for c in columns:
            table.add_column(c)
        for row in rows:
            table.add_row(*(escape(printable(str(v))) for v in row))
        Console(highlight=False).print(table)

    def lines(self, lines: list[str]) -> None:
        if not self.options.quiet:
            for line in lines:
                print(printable(line))


_CONTROL = {c: f"\\x{c:02x}" for c in list(range(0x20)) + list(range(0x7f, 0xa0))
            if c != 0x09}


def printable(text: str) -> str:
    """Text from servers may hold control characters: never let them reach a terminal."""
    return text.translate(_CONTROL)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def summary_line(r: AccountResult) -> str:
    parts = [f"{r.downloaded} downloaded ({human_bytes(r.bytes_downloaded)})"]
    if r.paired:
        parts.append(f"{r.paired} already on both sides (paired)")
    if r.uploaded:
        parts.append(f"{r.uploaded} uploaded")
    if r.flags_changed:
        parts.append(f"{r.flags_changed} flag changes")
    if r.deleted_remote:
        parts.append(f"{r.deleted_remote} deleted on the server")
    if r.deleted_local:
        parts.append(f"{r.deleted_local} deleted locally")
    if r.skipped:
        parts.append(f"{r.skipped} skipped")
    return f"{r.name}: " + ", ".join(parts) + f" in {r.seconds:.1f} s"

