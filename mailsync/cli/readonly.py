"""Read-only commands: check, status, folders. They change nothing anywhere."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import datetime, timezone

from mailsync.drivers import pop3
from mailsync.config import Account, resolve_secret
from mailsync.errors import MailsyncError
from mailsync.results import COUNTS
from mailsync.state import read_only_copy
from mailsync.cli.ui import Ui, human_bytes


def check_accounts(accounts: list[Account], ui: Ui) -> int:
    """Connect and log in to each account; return the exit code."""
    codes, report = [], []
    for account in accounts:
        try:
            info = _check_one(account, ui)
            report.append({"name": account.name, "ok": True, **info})
            if not ui.options.json:   # --json: the one object below is all of stdout
                ui.lines([f"{account.name}: ok: " + check_text(info)])
        except MailsyncError as exc:
            codes.append(exc.exit_code)
            report.append({"name": account.name, "ok": False, "exit_code": exc.exit_code,
                           "error": exc.message, "hint": exc.hint or None})
            ui.error(str(exc))
    code = 0 if not codes else (codes[0] if len(codes) == len(accounts) else 1)
    if ui.options.json:
        print(json.dumps({"exit_code": code, "accounts": report}, ensure_ascii=False))
    return code


def check_text(info: dict) -> str:
    """What check found, in words: the fields --json gives."""
    tls = (f"{info['tls']} ({info['tls_version']}, certificate verified)"
           if info.get("tls_version") else "none")
    parts = [f"server: {info['host']}:{info['port']}", f"tls: {tls}", f"user: {info['user']}",
             "capabilities: " + (" ".join(info["capabilities"]) or "none listed")]
    if "folders" in info:
        names = info["folders"]
        shown = ", ".join(names[:SHOWN_FOLDERS])
        more = len(names) - SHOWN_FOLDERS
        parts.append(f"folders: {len(names)} ({shown}" + (f", +{more} more)" if more > 0
                                                            else ")"))
    if info.get("inbox_messages") is not None:
        parts.append(f"messages: {info['inbox_messages']} in INBOX")
    if "messages" in info:
        parts.append(f"messages: {info['messages']} ({human_bytes(info['bytes'])})")
    return "; ".join(parts)


SHOWN_FOLDERS = 8          # check names at most this many folders, then "(+N more)"


def _check_one(account: Account, ui: Ui) -> dict:
    if account.protocol != "pop3":
        from mailsync.cli.imapcheck import check_imap  # noqa: PLC0415 (IMAP only)
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
    from mailsync.pop3fetch.deliver import check_delivery   # noqa: PLC0415 (deliver = mda|lmtp)
    return {"host": account.host, "port": account.port, "tls": account.tls,
            "tls_version": tls, "certificate_verified": bool(tls), "user": account.user,
            "capabilities": sorted(caps), "messages": count, "bytes": size,
            **check_delivery(account)}


STATUS_COLUMNS = ["account", "protocol", "last run", "result", "downloaded",
                  "known messages"]
STATUS_KINDS = {"last run": "date", "downloaded": "number", "known messages": "number"}


def show_status(accounts: list[Account], ui: Ui, every_row: bool = False) -> int:
    """One row per account; for IMAP also one row per folder the state knows (a "folder"
    column appears when an IMAP account is shown, so POP3-only output is unchanged).
    --json: per account its fields, the last run's and its folders'. More accounts
    than a screen holds (without --all): the totals and the accounts needing a look."""
    from mailsync.cli import statussummary
    if len(accounts) > statussummary.SUMMARY_OVER and not every_row and not ui.options.json:
        return statussummary.show_summary(accounts, ui)
    imap_shown = any(a.protocol != "pop3" for a in accounts)
    rows, data = [], []
    for account in accounts:
        last = last_run(account)
        known = _stored_count(account)
        item = {"name": account.name, "protocol": account.protocol, "last_run": None,
                "known_messages": known, "failing_since": None}
        folder_col = ["-" if account.protocol == "pop3" else "*"] if imap_shown else []
        if last is None:
            rows.append([account.name, *folder_col, account.protocol, "never", "-", None,
                         None])
            folder_rows, folder_data = _folder_rows(account, None)
        else:
            s = last["summary"]
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last["finished"]))
            downloaded = _downloaded(account, last)
            result = "ok" if last["exit_code"] == 0 else \
                f"exit {last['exit_code']}: {last['error']}"
            since = _failing_since(account)
            if since is not None:
                result = time.strftime("failing since %Y-%m-%d %H:%M; ",
                                       time.localtime(since)) + result
                item["failing_since"] = _iso(since)
            rows.append([account.name, *folder_col, account.protocol, when, result,
                         downloaded, known])
            item["last_run"] = {
                "command": last["command"], "started": _iso(last["started"]),
                "finished": _iso(last["finished"]), "exit_code": last["exit_code"],
                "error": last["error"], "downloaded": downloaded,
                **{k: s.get(k, 0) for k in COUNTS if k != "downloaded"}}
            folder_rows, folder_data = _folder_rows(account, last, when)
        rows += folder_rows
        if account.protocol != "pop3":
            item["folders"] = folder_data
        data.append(item)
    columns = list(STATUS_COLUMNS)
    if imap_shown:
        columns.insert(1, "folder")
    from mailsync.cli.statusmore import add_details   # placeholders, skipped folders, watch
    notes = add_details(accounts, data)
    payload: dict = {"accounts": data}
    if len(accounts) > statussummary.SUMMARY_OVER:
        payload["summary"] = statussummary.summarise(accounts)[0]
    ui.table("mailsync status", columns, rows, payload, STATUS_KINDS)
    if notes and not ui.options.json:
        ui.lines(notes)
    return 0


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, timezone.utc).astimezone().isoformat(
        timespec="seconds")


def _downloaded(account: Account, last: dict) -> int:
    """What the last run stored: its summary's count, or for a run that ended early
    (interrupted, a cut link: its summary counts nothing) the messages the state
    recorded as downloaded during it."""
    counted = int(last["summary"].get("downloaded", 0) or 0)
    if last["exit_code"] == 0 or last["started"] is None:
        return counted
    stored = _stored_during(account, last["started"], last["finished"])
    return max(counted, sum(stored.values()))


_OUR_KEY = re.compile(r"(\d+)\.M\d+P\d+Q\d+R[0-9a-f]{8}\.")   # maildir.unique_name()


def _stored_during(account: Account, started: float, finished: float) -> dict[str, int]:
    """Messages downloaded between started and finished, per folder ("INBOX" for POP3):
    POP3 records when; an IMAP download is stored under a Maildir name mailsync made
    then, and that name begins with the time."""
    db = _open_readonly(account)
    if db is None:
        return {}
    try:
        if account.protocol == "pop3":
            return {"INBOX": db.execute(
                "SELECT count(*) FROM pop_seen WHERE downloaded_at >= ? AND "
                "downloaded_at <= ?", (started, finished)).fetchone()[0]}
        counts: dict[str, int] = {}
        for folder, key in db.execute("SELECT folder, key FROM pairs WHERE uid IS NOT NULL "
                                      "AND key GLOB '[0-9]*.M*R*'"):
            m = _OUR_KEY.match(key)
            if m and int(started) <= int(m.group(1)) <= finished:
                counts[folder] = counts.get(folder, 0) + 1
        return counts
    except sqlite3.Error:
        return {}
    finally:
        db.close()


def _folder_rows(account: Account, last: dict | None, when: str = "-"
                 ) -> tuple[list[list], list[dict]]:
    """IMAP: each folder the state knows, with its result in the last run (if it was in
    it) and the messages known on both sides: table rows, and the same as fields."""
    if account.protocol == "pop3":
        return [], []
    db = _open_readonly(account)
    if db is None:
        return [], []
    try:
        known = db.execute(
            "SELECT f.name, (SELECT count(*) FROM pairs p WHERE p.folder = f.name AND "
            "p.uid IS NOT NULL AND p.key IS NOT NULL) FROM imap_folders f ORDER BY f.name"
        ).fetchall()
    except sqlite3.Error:
        return [], []
    finally:
        db.close()
    in_run = {f.get("name"): f for f in ((last or {}).get("summary", {}).get("folders") or [])}
    stopped = {}        # a run that ended early records no folders: what each stored
    if last and last["exit_code"] != 0 and not in_run and last.get("started") is not None:
        stopped = _stored_during(account, last["started"], last["finished"])
    # A folder that failed on its very first run is in the run's summary only.
    known += [(name, 0) for name in in_run if name not in {n for n, _ in known}]
    rows, data = [], []
    for name, count in known:
        f = in_run.get(name)
        item = {"name": name, "known_messages": count, "in_last_run": f is not None}
        data.append(item)
        if f is None and stopped.get(name):   # the run stopped early, after storing some
            item["downloaded"] = stopped[name]
            rows.append([account.name, name, account.protocol, when, "-", stopped[name],
                         count])
            continue
        if f is None:
            rows.append([account.name, name, account.protocol, "-", "-", None, count])
            continue
        ok = f.get("ok", True)
        item.update(exit_code=f.get("exit_code", 0), error=f.get("error"),
                    **{k: f.get(k, 0) for k in COUNTS})
        result = "ok" if ok else f"exit {f.get('exit_code')}: {f.get('error')}"
        rows.append([account.name, name, account.protocol, when, result,
                     f.get("downloaded", 0), count])
    return rows, data


def _open_readonly(account: Account) -> sqlite3.Connection | None:
    path = account.state_dir / "state.sqlite3"
    if not path.exists():
        return None
    try:
        return read_only_copy(path)   # writes nothing, not even -wal/-shm files
    except sqlite3.Error:
        return None


def last_run(account: Account) -> dict | None:
    """The account's last recorded run (its end, exit status, error, summary, start,
    command, and since when its failures run), or None: never run, or no state."""
    db = _open_readonly(account)
    if db is None:
        return None
    try:
        row = db.execute("SELECT finished, exit_code, error, summary, started, command, "
                         "failing_since FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    if row is None:
        return None
    try:
        summary = json.loads(row[3])
    except ValueError:
        summary = {}
    return {"finished": row[0], "exit_code": row[1], "error": row[2],
            "summary": summary if isinstance(summary, dict) else {}, "started": row[4],
            "command": row[5], "failing_since": row[6]}


def _failing_since(account: Account) -> float | None:
    """If the last run failed: when the account's failures began."""
    db = _open_readonly(account)
    if db is None:
        return None
    try:   # recorded from state version 2 on
        row = db.execute("SELECT failing_since FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        row = None
    finally:
        db.close()
    return row[0] if row else None


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
        from mailsync.cli.imapcheck import show_imap_folders  # noqa: PLC0415
        return show_imap_folders(account, ui)
    session = pop3.connect(account, resolve_secret(account), ui.trace if ui.tracing else None)
    try:
        count, size = session.stat()
        session.quit()
    except BaseException:
        session.abort()
        raise
    local = str(account.maildir)
    ui.table(f"{account.name} folders", ["server folder", "messages", "size", "local folder"],
             [["INBOX", count, human_bytes(size), local]],
             {"account": account.name, "protocol": "pop3", "folders": [
                 {"server_folder": "INBOX", "messages": count, "bytes": size,
                  "local_folder": local, "note": ""}]},
             {"messages": "number", "size": "number", "local folder": "path"})
    return 0
