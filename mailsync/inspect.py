"""Read-only commands: check, status, folders. They change nothing anywhere."""

from __future__ import annotations

import json
import sqlite3
import time

from mailsync import pop3
from mailsync.config import Account, resolve_secret
from mailsync.errors import MailsyncError
from mailsync.ui import Ui, human_bytes


def check_accounts(accounts: list[Account], ui: Ui) -> int:
    """Connect and log in to each account; return the exit code."""
    codes, report = [], []
    for account in accounts:
        try:
            info = _check_one(account, ui)
            report.append({"name": account.name, "ok": True, **info})
            ui.lines([f"{account.name}: ok: " + "; ".join(f"{k}: {v}" for k, v in info.items())])
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
    rows = []
    for account in accounts:
        last = _last_run(account)
        if last is None:
            rows.append([account.name, account.protocol, "never", "-", "-", "-"])
            continue
        s = last["summary"]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last["finished"]))
        result = "ok" if last["exit_code"] == 0 else f"exit {last['exit_code']}: {last['error']}"
        rows.append([account.name, account.protocol, when, result,
                     str(s.get("downloaded", 0)), str(_stored_count(account))])
    ui.table("mailsync status", ["account", "protocol", "last run", "result", "downloaded",
                                 "known messages"], rows)
    return 0


def _open_readonly(account: Account) -> sqlite3.Connection | None:
    path = account.state_dir / "state.sqlite3"
    if not path.exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


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


def _stored_count(account: Account) -> int:
    db = _open_readonly(account)
    if db is None:
        return 0
    try:
        table = "pop_seen" if account.protocol == "pop3" else "pairs"
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
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
