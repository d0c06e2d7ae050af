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

from mailsync.results import AccountResult


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
        self._board: Board | None = None    # the live progress view while one is drawn
        import threading
        self._board_lock = threading.Lock()

    def _err(self, text: str) -> None:
        text = printable(text)
        board = self._board
        if board is not None:   # print above the live bars, not through them
            board.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    # Reporter -------------------------------------------------------------------------
    def _show_progress(self) -> bool:
        o = self.options
        return o.progress and not o.quiet and sys.stderr.isatty()

    def _drawing(self) -> "Board | None":
        """The live view, started on first use (accounts' threads race for it)."""
        if self._board is None and self._show_progress():
            with self._board_lock:
                if self._board is None:
                    self._board = Board()
        return self._board

    def accounts_started(self, names: list[str]) -> None:
        """A run of these accounts begins (several at once with --jobs)."""
        if len(names) > 1 and (board := self._drawing()) is not None:
            board.accounts(len(names))

    def account_finished(self, result: AccountResult) -> None:
        if self._board is not None:
            self._board.account_finished(result.ok)

    def transfer_started(self, label: str, messages: int, nbytes: int) -> None:
        board = self._drawing()
        if board is None:
            return
        account, _, folder = label.partition("/")   # account names hold no "/"
        board.started(account, folder or None, messages, nbytes)

    def transferred(self, nbytes: int, stored: int | None = None) -> None:
        if self._board is not None:
            self._board.transferred(nbytes, nbytes if stored is None else stored)

    def transfer_finished(self) -> None:
        if self._board is not None:
            self._board.finished()

    def close(self) -> None:
        """Stop drawing: the bars stay on the screen as they finished."""
        board, self._board = self._board, None
        if board is not None:
            board.stop()

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
        self.close()
        for r in results:
            # -q: a temporary failure younger than the account's report_after stays
            # quiet (cron mails nothing); the exit status still tells.
            if not r.ok and not (self.options.quiet and r.withheld):
                self._failure(r)
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
            if self.options.verbose >= 1 and not r.dry_run:
                for f in r.folders or []:
                    print(printable(folder_summary_line(r.name, f)))

    def _failure(self, r: AccountResult) -> None:
        """One line per failed folder (a refusal's reason and hint each on their own
        line), else the account's one line."""
        failed = [f for f in r.folders or [] if not f.ok and f.error]
        if not failed or r.exit_code != 1:   # a run that an error ended: its one line
            self.error(r.error or "failed")
            return
        for f in failed:
            for i, line in enumerate(readable_error(f.error or f"folder {f.name} failed")):
                self._err(("mailsync: " if i == 0 else "  ") + line)

    def plan(self, r: AccountResult) -> None:
        print(printable(f"{r.name}: dry run, nothing changed; the plan:"))
        for line in r.plan or ["nothing to do"]:
            print(printable(f"  {line}"))
        if r.plan:
            print(printable(f"{r.name}: would {plan_totals(r.plan)}"))

    def table(self, title: str, columns: list[str], rows: list[list], data: dict | None = None,
              kinds: dict[str, str] | None = None) -> None:
        """A table for people; with --json, data (fields, numbers as numbers) instead.
        kinds: a column's "path" (kept whole: folded onto more lines, never cut),
        "date" or "number" (never wrapped); other columns wrap between words."""
        if self.options.json:
            print(json.dumps(data if data is not None else
                             {"title": title, "columns": columns, "rows": rows},
                             ensure_ascii=False))
            return
        cells = [[_cell(v) for v in row] for row in rows]
        if not sys.stdout.isatty():
            # Scripts read this: tab-separated, nothing cut short to fit a width.
            for row in [columns] + cells:
                print("\t".join(printable(v).replace("\t", "\\t") for v in row))
            return
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
        kinds = kinds or {}
        table = Table(title=title, title_justify="left")
        for c in columns:
            kind = kinds.get(c, "text")
            if kind == "path":
                table.add_column(c, overflow="fold", min_width=min(24, len(c) + 8))
            elif kind in ("date", "number"):
                table.add_column(c, no_wrap=True, justify="right" if kind == "number"
                                 else "left")
            else:
                table.add_column(c, overflow="fold")
        for row in cells:
            table.add_row(*(Text(printable(v)) for v in row))
        Console(highlight=False).print(table)

    def lines(self, lines: list[str]) -> None:
        if not self.options.quiet:
            for line in lines:
                print(printable(line))


_CONTROL = {c: f"\\x{c:02x}" for c in list(range(0x20)) + list(range(0x7f, 0xa0))
            if c != 0x09}


def _cell(value) -> str:
    return "-" if value is None else str(value)


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


# The counts a summary line names when they are not zero, in this order.
_SUMMARY_PARTS = (
    ("paired", "{} already on both sides (paired)"),
    ("uploaded", "{} uploaded"),
    ("flags_changed", "{} flag changes"),
    ("deleted_remote", "{} deleted on the server"),
    ("deleted_local", "{} deleted locally"),
    ("skipped", "{} skipped"),
    ("left_for_later", "{} left on the server for a later run (limit)"),
    ("left_marked", "{} left marked deleted on the server (expunged later)"),
    ("copied", "{} copied from another label's folder"),
)


def summary_line(r: AccountResult) -> str:
    parts = [f"{r.downloaded} downloaded ({human_bytes(r.bytes_downloaded)})"]
    parts += [text.format(getattr(r, name)) for name, text in _SUMMARY_PARTS
              if getattr(r, name)]
    return f"{r.name}: " + ", ".join(parts) + f" in {r.seconds:.1f} s"



def folder_summary_line(account: str, f) -> str:
    """-v: one folder's counts (or its failure), under the account's summary."""
    if not f.ok:
        return f"  {account}/{f.name}: failed (exit {f.exit_code})"
    parts = [f"{f.downloaded} downloaded ({human_bytes(f.bytes_downloaded)})"]
    for count, words in ((f.paired, "paired"), (f.uploaded, "uploaded"),
                         (f.flags_changed, "flag changes"),
                         (f.deleted_remote, "deleted on the server"),
                         (f.deleted_local, "deleted locally"), (f.skipped, "skipped")):
        if count:
            parts.append(f"{count} {words}")
    return f"  {account}/{f.name}: " + ", ".join(parts)


def readable_error(text: str) -> list[str]:
    """A long error as lines: the what, then each reason and the hint on its own."""
    if len(text) <= 100 or "; " not in text:
        return [text]
    head, *rest = text.split("; ")
    what, refused, reason = head.partition(": refused: ")
    if refused:                    # "... folder X: refused:", then each reason
        return [what + ": refused:", reason] + rest
    return [head + ";"] + rest


_PLAN_KINDS = (   # (verb a plan line starts with, after "FOLDER: " for IMAP; its total)
    ("download", "download {}"), ("upload", "upload {}"),
    ("flags on the server", "change flags of {} on the server"),
    ("flags locally", "change flags of {} locally"),
    ("expunge", "expunge {} on the server"), ("delete local", "delete {} locally"),
    ("delete message", "delete {} on the server"),
    ("create local folder", "create {} local folder{s}"),
    ("create server folder", "create {} server folder{s}"),
    ("leave message", "leave {} on the server (over max_size)"),
)


def plan_totals(lines: list[str]) -> str:
    """A dry run's totals: "download 12 (3.4 MB), upload 2, ..."."""
    import re
    counts = dict.fromkeys((k for k, _ in _PLAN_KINDS), 0)
    nbytes, later = 0, 0
    for line in lines:
        m = re.match(r"leave (\d+) new messages for a later run", line)
        if m:
            later += int(m.group(1))
            continue
        for kind, _ in _PLAN_KINDS:
            if re.match(rf"(?:.*?: )?{kind}\b", line):
                counts[kind] += 1
                size = re.search(r"\((\d+) bytes\)", line) if kind == "download" else None
                nbytes += int(size.group(1)) if size else 0
                break
    parts = [template.format(counts[kind], s="" if counts[kind] == 1 else "s")
             for kind, template in _PLAN_KINDS if counts[kind]]
    if parts and nbytes and parts[0].startswith("download"):
        parts[0] += f" ({human_bytes(nbytes)})"
    if later:
        parts.append(f"leave {later} for a later run (limit)")
    return ", ".join(parts) or "change nothing"


# Progress ------------------------------------------------------------------------------
ACCOUNT_WIDTH = 16     # an account's name is shortened (in the middle) beyond this
MIN_BAR = 8


MAX_BARS = 8           # accounts drawn at once; with more, the finished ones give way


@dataclass
class _Bar:
    """One account: every transfer of its run added up, with one ETA."""
    name: str
    started: float
    messages: int = 0
    nbytes: int = 0         # expected: planned, corrected to the stored size as each ends
    done: int = 0
    stored: int = 0
    ended: float | None = None
    running: int = 0        # its transfers in flight


@dataclass
class _Transfer:
    """One folder's transfer (a POP3 account's one transfer), as its thread reports it."""
    bar: _Bar
    folder: str | None
    messages: int
    nbytes: int             # planned: the sizes the server announced
    done: int = 0
    planned_done: int = 0   # the planned sizes of the messages done
    stored: int = 0         # the bytes those messages took, as the summary counts them


@dataclass
class _Tally:
    """Accounts of a run of several: how many, how many over, how many failed."""
    total: int
    finished: int = 0
    failed: int = 0


class Board:
    """The live view on a terminal: one bar per account with the overall count, bytes
    and ETA, and the folders in flight named beneath it (gone when done). With several
    accounts at once (--jobs) a first line counts the accounts done, failed, running
    and waiting, and at most MAX_BARS accounts are drawn, the running ones first.

    Transfers are told apart by the thread that reports them: a folder runs on one
    thread from its transfer's start to its end, and its label names the account. A
    message's bytes are counted as stored (what the summary says, e.g. LF where the
    server counts CRLF), and the account's expected total is corrected by the
    difference as each message ends; a transfer that ends early takes its messages
    not done off the total. So when the last transfer ends, the bar is at 100% and
    shows the summary's figures."""

    def __init__(self) -> None:
        import threading
        import time

        from rich.console import Console
        from rich.live import Live
        self._clock = time.monotonic
        self._ident = threading.get_ident
        self._lock = threading.Lock()
        self._bars: list[_Bar] = []
        self._by_name: dict[str, _Bar] = {}
        self._running: dict[int, _Transfer] = {}   # thread -> its transfer
        self.tally: _Tally | None = None
        self.console = Console(stderr=True, highlight=False)
        self._live = Live(console=self.console, get_renderable=self._render,
                          refresh_per_second=8, transient=False, redirect_stdout=False,
                          redirect_stderr=False)
        self._live.start()

    # Called by the engines' threads ---------------------------------------------------
    def accounts(self, total: int) -> None:
        with self._lock:
            self.tally = _Tally(total)

    def account_finished(self, ok: bool) -> None:
        with self._lock:
            if self.tally is not None:
                self.tally.finished += 1
                self.tally.failed += not ok

    def started(self, account: str, folder: str | None, messages: int, nbytes: int) -> None:
        with self._lock:
            bar = self._by_name.get(account)
            if bar is None:
                bar = self._by_name[account] = _Bar(account, self._clock())
                self._bars.append(bar)
            bar.ended = None
            bar.running += 1
            bar.messages += messages
            bar.nbytes += nbytes
            self._running[self._ident()] = _Transfer(bar, folder, messages, nbytes)

    def transferred(self, planned: int, stored: int) -> None:
        with self._lock:
            t = self._running.get(self._ident())
            if t is None:
                return
            t.done += 1
            t.planned_done += planned
            t.stored += stored
            t.bar.done += 1
            t.bar.stored += stored
            t.bar.nbytes += stored - planned

    def finished(self) -> None:
        with self._lock:
            t = self._running.pop(self._ident(), None)
            if t is None:
                return
            bar = t.bar
            bar.messages -= t.messages - t.done        # what did not come, if it ended early
            bar.nbytes -= max(0, t.nbytes - t.planned_done)
            bar.running -= 1
            if not bar.running:
                bar.ended = self._clock()

    def print(self, text: str) -> None:
        from rich.text import Text
        self.console.print(Text(text))   # above the live view

    def stop(self) -> None:
        with self._lock:
            self._running.clear()
            for bar in self._bars:
                bar.running = 0
                bar.ended = bar.ended or self._clock()
        self._live.stop()

    # Drawing ----------------------------------------------------------------------------
    def _render(self):
        from rich.text import Text
        width = max(20, self.console.width)
        with self._lock:
            lines = [] if self.tally is None or self.tally.total < 2 else \
                [tally_line(self.tally, self._in_flight(), width)]
            for bar in self._shown():
                lines.append(account_line(bar.name, bar.done, bar.messages, bar.stored,
                                          bar.nbytes, self._eta(bar), width))
                for t in self._running.values():
                    if t.bar is bar and t.folder is not None:
                        lines.append(folder_line(t.folder, t.done, t.messages, t.stored,
                                                 width))
        return Text("\n".join(lines), no_wrap=True, overflow="crop")

    def _in_flight(self) -> int:
        return sum(1 for bar in self._bars if bar.running)

    def _shown(self) -> list[_Bar]:
        """Every bar while they fit; else the running ones, then the latest finished."""
        if len(self._bars) <= MAX_BARS:
            return self._bars
        running = [b for b in self._bars if b.running][:MAX_BARS]
        ended = [b for b in self._bars if not b.running][-(MAX_BARS - len(running)):] \
            if len(running) < MAX_BARS else []
        return running + ended

    def _eta(self, bar: _Bar) -> str:
        if bar.ended is not None:
            return "done"
        elapsed = self._clock() - bar.started
        left = bar.nbytes - bar.stored
        if bar.stored <= 0 or elapsed <= 0:
            return "eta -:--"
        return "eta " + clock_text(left * elapsed / bar.stored)


def tally_line(tally: _Tally, transferring: int, width: int) -> str:
    """"accounts 37/100 done, 2 failed, 3 transferring": the run of many, in one line."""
    text = f"accounts {tally.finished}/{tally.total} done"
    if tally.failed:
        text += f", {tally.failed} failed"
    if transferring:
        text += f", {transferring} transferring"
    return shorten(text, width - 1)


def clock_text(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"


def shorten(text: str, width: int) -> str:
    """text in at most width columns, cut in the middle: both ends stay readable."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def byte_pair(done: int, total: int) -> str:
    """"12.3/169.4 MB": both in the total's unit, the total as the summary writes it."""
    whole = human_bytes(total)
    unit = whole.split()[-1]
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    part = f"{done:.0f}" if unit == "B" else f"{done / scale:.1f}"
    return f"{part}/{whole}"


def account_line(name: str, done: int, messages: int, stored: int, nbytes: int,
                 eta: str, width: int) -> str:
    fraction = 1.0 if nbytes <= 0 and done >= messages else (
        min(1.0, stored / nbytes) if nbytes > 0 else done / max(1, messages))
    percent = f"{int(fraction * 100 + 1e-9):3d}%"
    tail = f" {percent} {done}/{messages} msgs {byte_pair(stored, nbytes)} {eta}"
    label = shorten(name, ACCOUNT_WIDTH)
    room = width - len(label) - len(tail) - 2
    if room < MIN_BAR:
        return shorten(label + tail, width - 1)
    filled = int(fraction * room)
    bar = "━" * filled + "╺" * (room - filled) if filled < room else "━" * room
    return f"{label} {bar}{tail}"


def folder_line(folder: str, done: int, messages: int, stored: int, width: int) -> str:
    tail = f" {done}/{messages} msgs {human_bytes(stored)}"
    room = max(4, width - len(tail) - 5)
    return f"  └ {shorten(folder, room)}{tail}"
