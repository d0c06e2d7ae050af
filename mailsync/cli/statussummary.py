"""`mailsync status` for many accounts: one screen, whatever their number.

Over SUMMARY_OVER accounts (without --all), status prints the totals (accounts ok,
failing, never run; when the last runs were; what they downloaded) and a table of
only the accounts that need a look: failing ones, longest failing first, then those
never run, at most ATTENTION_ROWS of them. --json keeps the per-account data and adds
these totals as "summary". Read-only, like status.
"""

from __future__ import annotations

import time

from mailsync.cli.readonly import last_run
from mailsync.cli.ui import Ui
from mailsync.config import Account

SUMMARY_OVER = 20       # more accounts than fit a screen as a table with folder rows
ATTENTION_ROWS = 15


def last_runs(account: Account) -> dict | None:
    """The last run's end, exit status, error, downloads and failing-since, or None."""
    run = last_run(account)
    if run is None:
        return None
    try:
        downloaded = int(run["summary"].get("downloaded", 0) or 0)
    except (ValueError, TypeError):
        downloaded = 0
    return {"finished": run["finished"], "exit_code": run["exit_code"],
            "error": run["error"], "downloaded": downloaded,
            "failing_since": run["failing_since"]}


def summarise(accounts: list[Account]) -> tuple[dict, list[tuple[Account, dict | None]]]:
    """The totals, and the accounts needing a look (failing first, then never run)."""
    runs = [(a, last_runs(a)) for a in accounts]
    ok = [r for _, r in runs if r is not None and r["exit_code"] == 0]
    failing = [(a, r) for a, r in runs if r is not None and r["exit_code"] != 0]
    never = [(a, r) for a, r in runs if r is None]
    ends = [r["finished"] for _, r in runs if r is not None and r["finished"]]
    totals = {"accounts": len(accounts), "ok": len(ok), "failing": len(failing),
              "never_run": len(never),
              "oldest_last_run": _iso(min(ends)) if ends else None,
              "newest_last_run": _iso(max(ends)) if ends else None,
              "downloaded": sum(r["downloaded"] for _, r in runs if r is not None)}
    failing.sort(key=lambda ar: ar[1]["failing_since"] or ar[1]["finished"] or 0)
    return totals, failing + never


def show_summary(accounts: list[Account], ui: Ui) -> int:
    totals, attention = summarise(accounts)
    head = (f"{totals['accounts']} accounts: {totals['ok']} ok, {totals['failing']} failing, "
            f"{totals['never_run']} never run")
    lines = [head]
    if totals["oldest_last_run"]:
        lines.append(f"last runs from {_clock(totals['oldest_last_run'])} to "
                     f"{_clock(totals['newest_last_run'])}; "
                     f"{totals['downloaded']} messages downloaded in them")
    ui.lines(lines)
    rows = [[a.name, a.protocol, _when(r), _result(r)] for a, r in attention[:ATTENTION_ROWS]]
    if rows:
        ui.table("accounts needing a look", ["account", "protocol", "last run", "result"],
                 rows, kinds={"last run": "date"})
    more = len(attention) - len(rows)
    if more > 0:
        ui.lines([f"... and {more} more needing a look; `mailsync status --all` shows "
                  "every account"])
    return 0


def _when(run: dict | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(run["finished"])) \
        if run and run["finished"] else "never"


def _result(run: dict | None) -> str:
    if run is None:
        return "never run"
    since = run["failing_since"] or run["finished"]
    prefix = time.strftime("failing since %Y-%m-%d %H:%M; ", time.localtime(since)) \
        if since else ""
    return f"{prefix}exit {run['exit_code']}: {run['error'] or 'failed'}"


def _iso(when: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(when, timezone.utc).astimezone().isoformat(
        timespec="seconds")


def _clock(iso: str) -> str:
    return iso[:16].replace("T", " ")
