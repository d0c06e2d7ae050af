"""What `mailsync status` adds for the always-in-step work: placeholders waiting per
folder, folders the last run skipped and why, and a running watch's connection state.

add_details() adds them to status's --json data (per account "watch" and
"skipped_folders", per folder "placeholders") and returns the lines shown after the
table. Read-only, like status: a read-only copy of the state, the watch's watch.json.
"""

from __future__ import annotations

import sqlite3
import time

from mailsync.config import Account
from mailsync.state import read_only_copy


def _placeholders(account: Account) -> dict[str, int]:
    path = account.state_dir / "state.sqlite3"
    if account.protocol == "pop3" or not path.exists():
        return {}
    try:
        db = read_only_copy(path)
    except sqlite3.Error:
        return {}
    try:
        return dict(db.execute("SELECT folder, count(*) FROM pairs WHERE placeholder = 1 "
                               "AND uid IS NOT NULL AND key IS NOT NULL GROUP BY folder"))
    except sqlite3.Error:
        return {}
    finally:
        db.close()


def _clock(when: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "-"


def add_details(accounts: list[Account], data: list[dict]) -> list[str]:
    from mailsync.watch import read_status
    lines: list[str] = []
    by_name = {a.name: a for a in accounts}
    for item in data:
        account = by_name.get(item.get("name"))
        if account is None:
            continue
        name = account.name
        watch = read_status(account)
        item["watch"] = None if watch is None else {
            "pid": watch.get("pid"), "connection": watch.get("connection"),
            "last_sync": _iso(watch.get("last_sync")), "last_result": watch.get("last_result"),
            "next_full_sync": _iso(watch.get("next_full_sync"))}
        if watch is not None:
            lines.append(f"{name}: watch running (pid {watch.get('pid')}): "
                         f"{watch.get('connection')}; last pass {_clock(watch.get('last_sync'))}"
                         f" {watch.get('last_result') or ''}".rstrip()
                         + f"; next full pass {_clock(watch.get('next_full_sync'))}")
        waiting = _placeholders(account)
        for folder in item.get("folders") or []:
            folder["placeholders"] = waiting.get(folder.get("name"), 0)
        for folder, count in sorted(waiting.items()):
            if count:
                lines.append(f"{name}: folder {folder}: {count} headers-only placeholder(s) "
                             "waiting (open or flag one, or `mailsync sync --full`)")
        skipped = ((item.get("last_run") or {}).get("skipped_folders")
                   or _last_skipped(account))
        item["skipped_folders"] = skipped
        for s in skipped:
            lines.append(f"{name}: folder {s.get('name')} skipped: {s.get('reason')}")
    return lines


def _last_skipped(account: Account) -> list[dict]:
    """The skipped folders recorded in the last run's summary (IMAP)."""
    import json
    path = account.state_dir / "state.sqlite3"
    if account.protocol == "pop3" or not path.exists():
        return []
    try:
        db = read_only_copy(path)
    except sqlite3.Error:
        return []
    try:
        row = db.execute("SELECT summary FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return list(json.loads(row[0]).get("skipped_folders") or []) if row else []
    except (sqlite3.Error, ValueError, AttributeError):
        return []
    finally:
        db.close()


def _iso(when: float | None) -> str | None:
    from datetime import datetime, timezone
    if not when:
        return None
    return datetime.fromtimestamp(when, timezone.utc).astimezone().isoformat(
        timespec="seconds")
