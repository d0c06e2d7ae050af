"""Read-only commands: check, status, folders. They change nothing anywhere."""

from __future__ import annotations

import json
import sqlite3
import time

from mailsync import pop3
from mailsync.config import Account, resolve_secret
from mailsync.errors import MailsyncError
from mailsync.state import read_only_copy
from mailsync.ui import Ui, human_bytes


def check_accounts(accounts: list[Account], ui: Ui) -> int:
    """Connect and log in to each account; return the exit code."""
    codes, report = [], []
    for account in accounts:
        try:
            info = _check_one(account, ui)
            report.append({"name": account.name, "ok": True, **info})
            if not ui.options.json:   # --json: the one object below is all of stdout
                ui.lines([f"{account.name}: ok: "
                          + "; ".join(f"{k}: {v}" for k, v in info.items())])
        except MailsyncError as exc:
            codes.append(exc.exit_code)
            report.append({"name": account.name, "ok": False, "error": str(exc)})
            ui.error(str(exc))
    code = 0 if not codes else (codes[0] if len(codes) == len(accounts) else 1)
    if ui.options.json:
        print(json.dumps({"exit_code": code, "accounts": report}, ensure_ascii=False))
    return code


def _check_one(account: Account, ui: Ui) -> dict:
    if account.protocol != "pop3":
        from mailsync.imapcheck import check_imap  # noqa: PLC0415 (IMAP only)
        return check_imap(account, ui)
    session = pop3.connect(account, resolve_secret(account), ui.trace if ui.tracing else None)
    try:
        caps = session.capabilities()
        count, size = session.stat()
        tls = session.client.sock.version() if hasattr(session.client.sock, "version") else None
        session.quit()
    except BaseException:
        session.abort()
        raise
    return {
        "server": f"{account.host}:{account.port}",
        "tls": f"{account.tls} ({tls}, certificate verified)" if tls else "none",
        "user": account.user,
        "capabilities": " ".join(sorted(caps)) or "none listed",
        "messages": f"{count} ({human_bytes(size)})",
    }


def show_status(accounts: list[Account], ui: Ui) -> int:
    """One row per account; for IMAP also one row per folder the state knows (a "folder"
    column appears when an IMAP account is shown, so POP3-only output is unchanged)."""
    imap_shown = any(a.protocol != "pop3" for a in accounts)
    rows = []
    for account in accounts:
        last = _last_run(account)
        folder_col = ["-" if account.protocol == "pop3" else "*"] if imap_shown else []
        if last is None:
            rows.append([account.name, *folder_col, account.protocol, "never", "-", "-", "-"])
            rows += _folder_rows(account, None)
            continue
        s = last["summary"]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last["finished"]))
        result = "ok" if last["exit_code"] == 0 else f"exit {last['exit_code']}: {last['error']}"
        result = _with_failing_since(account, result)
        rows.append([account.name, *folder_col, account.protocol, when, result,
                     str(s.get("downloaded", 0)), str(_stored_count(account))])
        rows += _folder_rows(account, last, when)
    columns = ["account", "protocol", "last run", "result", "downloaded", "known messages"]
    if imap_shown:
        columns.insert(1, "folder")
    ui.table("mailsync status", columns, rows)
    return 0


def _folder_rows(account: Account, last: dict | None, when: str = "-") -> list[list[str]]:
    """IMAP: each folder the state knows, with its result in the last run (if it was in
    it) and the messages known on both sides."""
    if account.protocol == "pop3":
        return []
    db = _open_readonly(account)
    if db is None:
        return []
    try:
        known = db.execute(
            "SELECT f.name, (SELECT count(*) FROM pairs p WHERE p.folder = f.name AND "
            "p.uid IS NOT NULL AND p.key IS NOT NULL) FROM imap_folders f ORDER BY f.name"
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    in_run = {f.get("name"): f for f in ((last or {}).get("summary", {}).get("folders") or [])}
    # A folder that failed on its very first run is in the run's summary only.
    known += [(name, 0) for name in in_run if name not in {n for n, _ in known}]
    rows = []
    for name, count in known:
        f = in_run.get(name)
        if f is None:
            rows.append([account.name, name, account.protocol, "-", "-", "-", str(count)])
            continue
        result = "ok" if f.get("ok", True) else f"exit {f.get('exit_code')}: {f.get('error')}"
        rows.append([account.name, name, account.protocol, when, result,
                     str(f.get("downloaded", 0)), str(count)])
    return rows


def _open_readonly(account: Account) -> sqlite3.Connection | None:
    path = account.state_dir / "state.sqlite3"
    if not path.exists():
        return None
    try:
        return read_only_copy(path)   # writes nothing, not even -wal/-shm files
    except sqlite3.Error:
        return None


def _last_run(account: Account) -> dict | None:
    db = _open_readonly(account)
    if db is None:
        return None
    try:
        row = db.execute("SELECT finished, exit_code, error, summary FROM runs "
                         "ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    if row is None:
        return None
    return {"finished": row[0], "exit_code": row[1], "error": row[2],
            "summary": json.loads(row[3])}


def _with_failing_since(account: Account, result: str) -> str:
    """A failed last run's result, led by since when the account has been failing."""
    db = _open_readonly(account)
    if db is None:
        return result
    try:   # recorded from state version 2 on
        row = db.execute("SELECT failing_since FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        row = None
    finally:
        db.close()
    if not row or row[0] is None:
        return result
    return time.strftime("failing since %Y-%m-%d %H:%M; ", time.localtime(row[0])) + result


def _stored_count(account: Account) -> int:
    db = _open_readonly(account)
    if db is None:
        return 0
    try:
        if account.protocol == "pop3":
            return db.execute("SELECT count(*) FROM pop_seen").fetchone()[0]
        # IMAP: messages in step on both sides (tombstones are not messages)
        return db.execute("SELECT count(*) FROM pairs WHERE uid IS NOT NULL "
                          "AND key IS NOT NULL").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def show_folders(account: Account, ui: Ui) -> int:
    if account.protocol != "pop3":
        from mailsync.imapcheck import show_imap_folders  # noqa: PLC0415
        return show_imap_folders(account, ui)
    session = pop3.connect(account, resolve_secret(account), ui.trace if ui.tracing else None)
    try:
        count, size = session.stat()
        session.quit()
    except BaseException:
        session.abort()
        raise
    ui.table(f"{account.name} folders", ["server folder", "messages", "size", "local folder"],
             [["INBOX", str(count), human_bytes(size), str(account.maildir)]])
    return 0
