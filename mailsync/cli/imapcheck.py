"""`mailsync check` and `mailsync folders` for IMAP accounts. Read-only: LIST and STATUS
only (no SELECT, not even EXAMINE, no APPEND/STORE/EXPUNGE/CREATE); no local file or
state is written."""

from __future__ import annotations

from mailsync import folders, names
from mailsync.drivers import imap
from mailsync.config import Account, resolve_secret
from mailsync.errors import MailsyncError
from mailsync.state import read_only_copy
from mailsync.cli.ui import Ui



def _connect(account: Account, ui: Ui) -> imap.ImapSession:
    return imap.connect(account, resolve_secret(account), ui.trace if ui.tracing else None)


def _tls_version(session: imap.ImapSession) -> str | None:
    client = getattr(session, "_client", None)
    sock = client.socket() if client is not None and hasattr(client, "socket") else None
    version = getattr(sock, "version", None)
    return version() if callable(version) else None


def check_imap(account: Account, ui: Ui) -> dict:
    """Connect, verify TLS, log in, list capabilities and folders; changes nothing."""
    session = _connect(account, ui)
    try:
        tls = _tls_version(session)
        listed = session.list_folders()
        selectable = sorted((f for f in listed if f.selectable),
                            key=lambda f: (f.name != "INBOX", f.name))
        inbox = next((f for f in selectable if f.name == "INBOX"), None)
        inbox_count = session.status(inbox).exists if inbox is not None else None
        session.logout()
    except BaseException:
        session.abort()
        raise
    return {"host": account.host, "port": account.port, "tls": account.tls,
            "tls_version": tls, "certificate_verified": bool(tls), "user": account.user,
            "capabilities": sorted(session.capabilities),
            "folders": [f.name for f in selectable], "inbox_messages": inbox_count}


def _known_folders(account: Account) -> dict[str, str]:
    """Folders the state has synced before, name -> recorded local relpath (read-only;
    none without a state)."""
    path = account.state_dir / "state.sqlite3"
    if not path.exists():
        return {}
    db = read_only_copy(path)
    try:
        return dict(db.execute("SELECT name, relpath FROM imap_folders").fetchall())
    except Exception:          # an unreadable state only makes the notes less precise
        return {}
    finally:
        db.close()


def show_imap_folders(account: Account, ui: Ui) -> int:
    """A table of the server's folders: message count (STATUS), the local folder each maps
    to, and what the next sync would do with it."""
    session = _connect(account, ui)
    rows: list[list[str]] = []
    try:
        listed = sorted(session.list_folders(), key=lambda f: (f.name != "INBOX", f.name))
        delimiter = session.delimiter or next((f.delimiter for f in listed if f.delimiter),
                                              "/")
        server = [folders.ServerSide(f.name, f.raw, f.delimiter) for f in listed
                  if f.selectable and not session.unsendable(f.raw)]
        local = folders.local_maildirs(account.maildir, account.layout)
        namespace = folders.namespace_of(session)
        pairings, skipped = folders.pair_folders(
            server, local, _known_folders(account), account.layout, account.mode,
            account.folders, account.exclude, delimiter, namespace)
        by_server = {p.server.raw: p for p in pairings if p.server is not None}
        reasons = {s.name: s.reason for s in skipped}
        for f in listed:
            count, note = None, ""
            local_path = None
            if session.unsendable(f.raw):
                note = "skipped: its name holds a line break or NUL, which cannot be sent back"
            elif not f.selectable:
                note = "not selectable (holds only folders)"
            else:
                try:
                    count = session.status(f).exists
                except imap.CommandRefused as exc:
                    note = f"STATUS refused: {exc.message}"
                pairing = by_server.get(f.raw)
                if pairing is not None:
                    local_path = str(_local_path(account, pairing.relpath))
                    if pairing.create_local:
                        note = note or "new: the next sync creates the local folder"
                    elif local_path != _mapped(account, namespace.shown(f.name),
                                               f.delimiter):
                        note = note or "under mbsync's or offlineimap's name for it"
                else:
                    local_path = _mapped(account, namespace.shown(f.name), f.delimiter)
                    note = note or reasons.get(f.name, f"not synced (folders/exclude or "
                                                       f"mode {account.mode})")
            rows.append([f.name, count, local_path, note])
        for p in pairings:
            if p.server is None:
                rows.append([p.name, None, str(_local_path(account, p.relpath)),
                             "local only: the next sync creates it on the server"])
        for s in skipped:
            if not any(row[0] == s.name for row in rows):
                rows.append([s.name, None, None, f"skipped: {s.reason}"])
        session.logout()
    except BaseException:
        session.abort()
        raise
    columns = ["server folder", "messages", "local folder", "note"]
    data = {"account": account.name, "protocol": "imap", "folders": [
        dict(zip(("server_folder", "messages", "local_folder", "note"), row)) for row in rows]}
    ui.table(f"{account.name} folders", columns, rows, data,
             {"messages": "number", "local folder": "path"})
    return 0


def _local_path(account: Account, relpath: str):
    return account.maildir / relpath if relpath else account.maildir


def _mapped(account: Account, name: str, delimiter: str | None) -> str | None:
    try:
        parts = names.canonical_parts(names.server_to_components(name, delimiter))
        return str(_local_path(account, names.local_relpath(parts, account.layout)))
    except (ValueError, MailsyncError):
        return None
