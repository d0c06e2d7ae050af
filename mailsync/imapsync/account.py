"""One IMAP account's run: the composition root of the sync.

It connects the drivers (the IMAP session, the Maildir folders, the state), pairs the
server's folders with the local ones, carries out the moves the user made between local
folders, and runs each folder's sync (mailsync.imapsync.folder) over one or more
connections, with one progress view."""

from __future__ import annotations

import threading
from dataclasses import replace

from mailsync import folders, names
from mailsync.drivers import imap
from mailsync.config import Account, resolve_secret
from mailsync.contracts import CommandRefused, LocalFolder
from mailsync.errors import MailsyncError, RefusedError
from mailsync.folders import FolderPairing
from mailsync.imapsync.folder import FolderSync, SyncOptions
from mailsync.imapsync.gmail import GmailCopies
from mailsync.imapsync.localmoves import LocalMoves
from mailsync.drivers.maildir import Entry, Maildir, wait_until_settled
from mailsync.modes import CHANGE_SERVER
from mailsync.pool import Pool
from mailsync.reporting import Reporter
from mailsync.results import AccountResult, FolderResult
from mailsync.state import State

__all__ = ["SyncOptions", "sync_account", "SharedReporter"]


def sync_account(account: Account, state: State, reporter: Reporter,
                 options: SyncOptions) -> AccountResult:
    """Sync every chosen folder; a folder's failure does not stop the others.

    Folders run in parallel over up to `connections` connections (one in a dry run,
    so its plan reads in folder order); each connection has its own thread and state
    handle, and one progress view."""
    result = AccountResult(name=account.name, protocol="imap", dry_run=options.dry_run,
                           folders=[])
    shared = SharedReporter(reporter, account.name)
    trace = shared.trace if shared.tracing else None
    secret = resolve_secret(account)
    session = imap.connect_waiting(account, secret, trace)

    def local_folder(relpath: str) -> LocalFolder:
        return Maildir(folders.resolve(account.maildir, relpath))

    def synced_folder(name: str) -> LocalFolder | None:
        record = state.folder_record(name)
        try:
            return local_folder(record.relpath) if record is not None else None
        except folders.UnsafeFolderPath:
            return None

    def open_helper() -> tuple[imap.ImapSession, State]:
        helper = imap.connect(account, secret, trace)
        try:
            return helper, State(account.state_dir)
        except BaseException:
            helper.abort()
            raise

    def close_helper(resource: tuple[imap.ImapSession, State], ok: bool) -> None:
        helper, helper_state = resource
        helper_state.close()
        helper.logout() if ok else helper.abort()

    def helper_failed(exc: BaseException) -> None:
        shared.detail(f"account {account.name}: working with fewer connections: {exc}")

    def sync_folder(pairing: FolderPairing, resource: tuple[imap.ImapSession, State],
                    busy) -> tuple[FolderResult, FolderSync | None]:
        folder_result = FolderResult(name=pairing.name)
        begun.append(folder_result)   # a run that ends early reports what each stored
        try:
            session, folder_state = resource
            if pairing.server is not None:
                # The UTF-8 name: the session encodes it (modified UTF-7) on the wire, or
                # uses the server's own spelling of a name that is not modified UTF-7.
                session.remember_raw(pairing.name, pairing.server.raw)
            folder = FolderSync(session, local_folder(pairing.relpath), account,
                                folder_state, shared, options, pairing, folder_result,
                                result.plan, on_work=busy, listed=scans.get(pairing.name),
                                gmail=gmail)
            folder.run()
        except (RefusedError, CommandRefused, folders.UnsafeFolderPath) as exc:
            folder_result.ok, folder_result.error = False, str(exc)
            folder_result.exit_code = exc.exit_code
            ended.add(id(folder_result))
            return folder_result, None
        ended.add(id(folder_result))
        return folder_result, folder

    # Gmail: one message in several labels (folders) is downloaded once, then copied
    # locally; one connection, so that no two folders fetch the same message at once.
    gmail = GmailCopies(state, synced_folder) if session.gmail else None
    size = 1 if options.dry_run or gmail is not None else account.connections
    scans: dict[str, tuple[str, dict[str, Entry]]] = {}   # listings the folders may reuse
    begun: list[FolderResult] = []   # folders begun, in the order they began
    ended: set[int] = set()          # id() of those that ended (done or refused)
    try:
        pairings = _folder_pairings(session, account, state, reporter, options, result)
        if not options.dry_run:
            local_moves = LocalMoves(session, local_folder, account.name, state, shared,
                                     pairings)
            local_moves.settle_interrupted_moves()   # in every mode: see there
            if options.mode in CHANGE_SERVER:
                local_moves.run()
                scans.update(local_moves.scans)
        pool = Pool(size, open_helper, close_helper, helper_failed)
        order = _largest_first(pairings) if size > 1 else list(range(len(pairings)))
        outputs = pool.run([pairings[i] for i in order], sync_folder, (session, state))
        done = [out for _, out in sorted(zip(order, outputs), key=lambda x: x[0])]
        for folder_result, _ in done:
            result.folders.append(folder_result)
            result.add(folder_result)
        _record_stamps_after_run([f for _, f in done if f is not None and f.finished],
                                 state)
        session.logout()
    except MailsyncError as exc:
        session.abort()
        # The summary keeps what each folder begun had stored (engine: partial); one
        # that did not end fails with the run's exit status (the error is the account's).
        for folder_result in begun:
            if id(folder_result) not in ended:
                folder_result.ok, folder_result.exit_code = False, exc.exit_code
            result.folders.append(folder_result)
            result.add(folder_result)
        exc.partial = result
        raise
    except BaseException:
        session.abort()
        raise
    failed = [f for f in result.folders if not f.ok]
    if failed:
        result.ok, result.exit_code = False, 1
        result.error = "; ".join(f.error or f.name for f in failed)
    return result


def _largest_first(pairings: list[FolderPairing]) -> list[int]:
    """The folders' indexes, the most messages on the server first: with several
    connections, the big folder that starts last would end last, alone (INBOX
    listed last held 40 % of a mailbox: its connection worked on after the
    other had finished). Folders LIST-STATUS did not count come last."""
    def messages(i: int) -> int:
        status = pairings[i].listed_status
        return status.exists if status is not None else -1
    return sorted(range(len(pairings)), key=messages, reverse=True)


def _record_stamps_after_run(synced: list["FolderSync"], state: State) -> None:
    """Each synced folder's stamp as the run left it, after one wait (at most
    FINE_SETTLE, for the whole run) for the last changes to settle."""
    if not synced:
        return
    wait_until_settled([f.local for f in synced])
    stamps = {f.name: stamp for f in synced if (stamp := f.stamp_after_run()) is not None}
    if stamps:
        state.set_local_stamps(stamps)


class SharedReporter:
    """The run's reporter for several folder threads: calls one at a time. Each folder
    reports its own transfer from its own thread (start, messages, end); the reporter
    adds them up into the account's one bar, with the folders in flight beneath it."""

    def __init__(self, reporter: Reporter, account: str) -> None:
        self.reporter, self.account = reporter, account
        self.tracing = getattr(reporter, "tracing", False)
        self._lock = threading.Lock()

    def transfer_started(self, label: str, messages: int, nbytes: int) -> None:
        with self._lock:
            self.reporter.transfer_started(label, messages, nbytes)

    def transferred(self, nbytes: int, stored: int | None = None) -> None:
        """nbytes: the message's size as planned (the server's); stored: as counted
        in the summary, when it differs."""
        with self._lock:
            if stored is None or stored == nbytes:
                self.reporter.transferred(nbytes)
            else:
                self.reporter.transferred(nbytes, stored)

    def transfer_finished(self) -> None:
        with self._lock:
            self.reporter.transfer_finished()

    def warn(self, text: str) -> None:
        with self._lock:
            self.reporter.warn(text)

    def detail(self, text: str) -> None:
        with self._lock:
            self.reporter.detail(text)

    def trace(self, direction: str, line: str) -> None:
        with self._lock:
            self.reporter.trace(direction, line)


def _folder_pairings(session: imap.ImapSession, account: Account, state: State,
                     reporter: Reporter, options: SyncOptions,
                     result: AccountResult) -> list[FolderPairing]:
    listed = session.list_folders(with_status=True)
    valid = {f.name for f in listed if f.name_ok}
    server, skipped = [], []
    unsendable = getattr(session, "unsendable", lambda raw: False)
    for f in listed:
        if not f.selectable:
            continue
        if unsendable(f.raw):
            skipped.append(folders.Skipped(f.name, "its name holds a line break or NUL, "
                                                   "which cannot be sent back to the "
                                                   "server; rename it there"))
        elif f.name_ok or f.name not in valid:
            # A name that is not modified UTF-7 (raw UTF-8, a control character, R&D)
            # is used as the server sent it; locally it is escaped like any other.
            server.append(folders.ServerSide(f.name, f.raw, f.delimiter))
        else:
            skipped.append(folders.Skipped(f.name, f"the server's name {f.raw!r} is not "
                                                   "modified UTF-7 and reads like that of "
                                                   "another folder; rename one of them"))
    delimiter = session.delimiter or next((f.delimiter for f in listed if f.delimiter), "/")
    namespace = folders.namespace_of(session)
    local = folders.local_maildirs(account.maildir, account.layout)
    known = {r.name: r.relpath for r in state.folder_records()}
    pairings, more = folders.pair_folders(
        server, local, known, account.layout, options.mode,
        options.folders or account.folders, account.exclude, delimiter, namespace)
    for s in skipped + more:
        shown = _printable_name(s.name)
        reporter.warn(f"account {account.name}: folder {shown}: {s.reason}")
        if s.fails:   # a folder the config wants, left unsynced: the run exits 1
            result.skipped_folders.append({"name": shown, "reason": s.reason})
            result.folders.append(FolderResult(name=shown, ok=False, exit_code=1,
                                               error=f"folder {shown} skipped: {s.reason}"))
    # sync --folder: the globs that select no folder, for the CLI to say so (the names
    # it sees are the server's whole names, the globs may be the ones users see).
    result.unmatched_globs = _unmatched_patterns(options.folders, pairings, skipped + more,
                                                 namespace, delimiter)
    statuses = {f.name: f.status for f in listed if f.status is not None}
    return [replace(p, listed_status=statuses.get(p.name)) for p in pairings]


def _printable_name(name: str) -> str:
    """A server name for output: bytes that are not UTF-8 (kept as surrogates) as
    \\xNN, control characters as escapes."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _unmatched_patterns(patterns: tuple[str, ...], pairings: list[FolderPairing],
                        skipped: list[folders.Skipped], namespace: folders.Namespace,
                        delimiter: str | None) -> list[str]:
    """The patterns that select none of these folders, as folders.selected matches."""
    candidates = [p.name for p in pairings] + [s.name for s in skipped if s.fails]
    missing = []
    for pattern in patterns:
        for name in candidates:
            shown = namespace.shown(name)
            try:
                parts = names.server_to_components(shown, delimiter)
            except ValueError:
                parts = (shown,)
            if folders.selected(name, parts, shown, namespace, (pattern,), ()):
                break
        else:
            missing.append(pattern)
    return missing
