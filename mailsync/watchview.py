"""`mailsync watch` on a terminal: a live table, one row per account (its state, its last
sync, its next action), with the event lines scrolling above it.

Off a terminal (stdout not a tty, TERM=dumb, -q) there is no view: each sync is one log
line on stderr (logfile.EventLog), as under systemd or with output to a file.

The view reads each AccountWatch's `info` (what watch.json holds) and redraws once a
second (the "2 min ago" of the last sync moves on); rendering a few rows costs well under
a millisecond, so a quiet watch stays idle.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Iterable

REFRESH = 1.0        # redraws per second


def on_terminal(quiet: bool = False) -> bool:
    """Whether watch shows the live view: stdout is a terminal that can draw it."""
    if quiet or os.environ.get("TERM") == "dumb":
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def ago(seconds: float) -> str:
    """A short, human span: "now", "12 s", "4 min", "2 h 5 min"."""
    seconds = max(0, int(seconds))
    if seconds < 2:
        return "now"
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def state_text(info: dict) -> str:
    """What the account's watch is doing: syncing, or its connection(s)."""
    if info.get("syncing"):
        return "syncing"
    connection = info.get("connection") or "starting"
    # "*: connected (NOTIFY, INBOX selected)" -> "connected (NOTIFY, INBOX selected)"
    parts = [p.split(": ", 1)[-1] if p.startswith("*: ") else p
             for p in connection.split("; ")]
    return "; ".join(parts)


def last_text(info: dict, now: float) -> str:
    """The last sync: its result and how long ago."""
    when = info.get("last_sync")
    if when is None:
        return "-"
    result = info.get("last_result") or "ok"
    counts = info.get("last_counts") or {}
    moved = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    head = result if result == "ok" else result.split(":", 1)[0]
    return f"{head}{' (' + moved + ')' if moved else ''}, {ago(now - when)} ago"


def next_text(info: dict, now: float) -> str:
    """What the watch does next, and when."""
    if info.get("syncing"):
        return "sync running"
    retry = info.get("retry_at")
    if retry is not None:
        return f"retry in {ago(retry - now)}" if retry > now + 1 else "retry now"
    full = info.get("next_full_sync")
    what = "fetch" if info.get("protocol") == "pop3" else "full sync"
    if full is None:
        return "waiting for changes"
    waiting = "" if info.get("protocol") == "pop3" else "waiting for changes; "
    return f"{waiting}{what} in {ago(full - now)}"


def rows(infos: Iterable[dict], now: float) -> list[tuple[str, str, str, str]]:
    """The table: (account, state, last sync, next), in account order."""
    return [(info.get("account", "?"), state_text(info), last_text(info, now),
             next_text(info, now))
            for info in sorted(infos, key=lambda i: i.get("account", ""))]


class _Lines:
    """A text stream for EventLog whose lines are printed above the live view."""

    def __init__(self, view: "WatchView") -> None:
        self.view = view
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self.view.print(line)
        return len(text)

    def flush(self) -> None:
        pass


class WatchView:
    """The live table on stdout (rich), fed by a callable that returns each account's
    info dict."""

    def __init__(self) -> None:
        from rich.console import Console
        self.console = Console(highlight=False, soft_wrap=False)
        self.stream = _Lines(self)
        self._source: Callable[[], list[dict]] = list
        self._live = None
        self._lock = threading.Lock()

    def start(self, source: Callable[[], list[dict]]) -> None:
        from rich.live import Live
        self._source = source
        self._live = Live(console=self.console, get_renderable=self._render,
                          refresh_per_second=REFRESH, transient=False,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()

    def print(self, text: str) -> None:
        from rich.text import Text
        with self._lock:
            self.console.print(Text(text), overflow="fold")

    def stop(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.refresh()
                self._live.stop()
                self._live = None

    def _render(self):
        from rich.table import Table
        table = Table(box=None, pad_edge=False, expand=False, show_edge=False,
                      header_style="bold")
        for title in ("account", "state", "last sync", "next"):
            table.add_column(title, overflow="fold")
        try:
            infos = self._source()
        except Exception:   # an account starting or stopping meanwhile: next time
            infos = []
        for row in rows(infos, time.time()):
            table.add_row(*row)
        return table
