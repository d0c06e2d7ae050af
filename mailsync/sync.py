"""One IMAP account's sync: folders, then per folder settle -> snapshot -> plan -> execute.

The decision is syncplan.plan_folder's; this module gathers its inputs and carries
its actions out in phases (transfers, flags, deletions), journalling every transfer
before its IO (state intents with the Maildir key chosen in advance, or the Message-ID
of an upload) so that a crash at any moment is settled by the next run, never repeated.
Flag changes are journalled too (the flags wanted on the side changed): one whose IO ran
but whose record was lost is recorded by the next run if that side shows it, so it is not
taken for the user's own change there (which would undo a later change on the other side).
"""

from __future__ import annotations

import io
import os
import re
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Iterable

from mailsync import adoption, crashpoints, folders, imap, moves, names, traces
from mailsync.config import Account, resolve_secret
from mailsync.errors import (Interrupted, MailsyncError, ProtocolError, RefusedError,
                             TemporaryError)
from mailsync.folders import FolderPairing
from mailsync.maildir import Entry, Maildir, TmpFile, unique_name, wait_until_settled
from mailsync.model import AccountResult, FolderResult
from mailsync.pool import Pool
from mailsync.ports import Reporter
from mailsync.state import FolderRecord, Intent, State
from mailsync.syncplan import (Action, DeleteLocal, Download, ExpungeRemote, FolderPlan,
                               Forget, LocalMsg, Pair, Policy, Record, RemoteMsg,
                               SetLocalFlags, SetRemoteFlags, Upload, UpgradePlaceholder,
                               plan_folder)

MANAGED = "DFPRST"
PLACEHOLDER_HEADER = b"X-Mailsync-Placeholder"
BATCH_MESSAGES = 200
BATCH_BYTES = 32 << 20
_PLACEHOLDER_RE = re.compile(rb"^X-Mailsync-Placeholder:\s*size=(\d+)", re.I | re.M)


@dataclass(frozen=True)
class SyncOptions:
    mode: str
    dry_run: bool = False
    folders: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    allow_mass_copy: bool = False
    full: bool = False


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
            folder = FolderSync(resource[0], account, resource[1], shared, options, pairing,
                                folder_result, result.plan, on_work=busy,
                                listed=scans.get(pairing.name), gmail_store=gmail_store)
            folder.run()
        except (RefusedError, imap.CommandRefused, folders.UnsafeFolderPath) as exc:
            folder_result.ok, folder_result.error = False, str(exc)
            folder_result.exit_code = exc.exit_code
            ended.add(id(folder_result))
            return folder_result, None
        ended.add(id(folder_result))
        return folder_result, folder

    # Gmail: one message in several labels (folders) is downloaded once, then copied
    # locally (gmail_store: X-GM-MSGID -> where it was stored); one connection, so that
    # no two folders fetch the same message at once.
    gmail_store: dict[int, tuple[Maildir, str]] | None = \
        {} if getattr(session, "gmail", False) else None
    size = 1 if options.dry_run or gmail_store is not None else account.connections
    scans: dict[str, tuple[str, dict[str, Entry]]] = {}   # listings the folders may reuse
    begun: list[FolderResult] = []   # folders begun, in the order they began
    ended: set[int] = set()          # id() of those that ended (done or refused)
    try:
        pairings = _folder_pairings(session, account, state, reporter, options, result)
        if not options.dry_run:
            local_moves = LocalMoves(session, account, state, shared, pairings)
            local_moves.settle_interrupted_moves()   # in every mode: see there
            if options.mode in ("sync", "push"):
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
    wait_until_settled([f.maildir for f in synced])
    stamps = {f.name: stamp for f in synced if (stamp := f.stamp_after_run()) is not None}
    if stamps:
        state.set_local_stamps(stamps)


class LocalMoves:
    """Messages the user moved between local folders, moved on the server with UID MOVE
    before the folders sync (see mailsync.moves), instead of uploaded and expunged.

    Crash safety: each move is journalled in the destination folder as an upload
    (token: the Message-ID) before the MOVE; after it, one transaction records the
    destination's pair and forgets the source's. A crash in between is settled by the
    next run before any folder syncs (settle_interrupted_moves), else like an
    interrupted upload: the destination is searched for the Message-ID."""

    def __init__(self, session: imap.ImapSession, account: Account, state: State,
                 reporter: Reporter, pairings: list[FolderPairing]) -> None:
        self.session, self.account, self.state = session, account, state
        self.reporter, self.pairings = reporter, pairings
        self.scans: dict[str, tuple[str, dict[str, Entry]]] = {}

    def run(self) -> None:
        changed = self._changed_folders()
        if len(changed) < 2:
            return      # a move changes two folders' directories
        if not any(self.state.synced_keys(pairing.name) - entries.keys()
                   for pairing, _, entries in changed):
            return      # nothing left any folder: flags changed, mail arrived
        changed_pairs = [(pairing, self.state.pairs(pairing.name), maildir, entries)
                         for pairing, maildir, entries in changed]
        gone = [g for pairing, pairs, maildir, entries in changed_pairs
                for g in self._gone(pairing, pairs, entries)]
        if not gone:
            return
        arrivals = [a for pairing, pairs, maildir, entries in changed_pairs
                    for a in self._arrivals(pairing, pairs, maildir, entries)]
        found = moves.match_moves(self._with_server_meta(gone), arrivals)
        for move in found:
            self._move(move)
        if found:
            self.reporter.detail(f"account {self.account.name}: moved {len(found)} "
                                 "message(s) on the server as they were moved locally")

    def settle_interrupted_moves(self) -> None:
        """A move killed after its UID MOVE and before its record left its upload intent
        in the destination and its pair in the source (same Maildir key). Settled here,
        before any folder syncs, in every mode and whichever folders this run syncs: if
        the source's UID is gone and the destination holds the Message-ID, the move
        happened; it is recorded as _move records it. Left to the source's sync, its UID
        would be taken for deleted on the server, and the file deleted if the user had
        moved it back meanwhile (then the destination's sync, pairing the moved copy with
        a file no longer there, would expunge it: gone from both sides)."""
        for intent, folder, uid in self.state.interrupted_moves():
            if self._holds(folder, intent.key) and self._holds(intent.folder, intent.key):
                continue                  # a copy under the same name: an upload, not a move
            try:
                self.session.select(folder)
                if self.session.fetch_meta([uid]):
                    continue              # not moved: the folders' syncs settle it
                self.session.select(intent.folder)
                found = _unpaired_matches(self.session, self.state, intent.folder,
                                          intent.token)
            except imap.CommandRefused:
                continue                  # a folder gone meanwhile: its sync says so
            # Several unpaired matches: the destination's sync settles the intent.
            pair = Pair(found[0], intent.key, intent.flags) if len(found) == 1 else None
            self.state.complete_move(folder, uid, intent.key, intent, pair)

    def _holds(self, folder: str, key: str | None) -> bool:
        """The local side of folder (as last synced) has a file with this key."""
        record = self.state.folder_record(folder)
        if record is None or key is None:
            return False
        try:
            return Maildir(folders.resolve(self.account.maildir, record.relpath)).find(key) \
                is not None
        except folders.UnsafeFolderPath:
            return False

    def _changed_folders(self) -> list[tuple[FolderPairing, Maildir, dict[str, Entry]]]:
        """The folders changed locally since the last run, listed; each listing is kept
        in self.scans with the stamp taken before it, for the folder's own sync."""
        out = []
        for pairing in self.pairings:
            record = self.state.folder_record(pairing.name)
            if (record is None or pairing.server is None or not pairing.local_exists
                    or self.state.intents(pairing.name)):
                continue
            try:
                maildir = Maildir(folders.resolve(self.account.maildir, pairing.relpath))
            except folders.UnsafeFolderPath:
                continue   # the folder's own sync reports it
            stamp = maildir.stamp()
            if stamp is not None and stamp == record.local_stamp:
                continue   # nothing left or arrived here since the last run
            entries = maildir.scan()
            if stamp is not None:
                self.scans[pairing.name] = (stamp, entries)
            out.append((pairing, maildir, entries))
        return out

    def _gone(self, pairing: FolderPairing, pairs: list[Pair],
              entries: dict[str, Entry]) -> list[moves.Gone]:
        return [moves.Gone(pairing.name, p.uid, p.key, p.flags, 0, None)
                for p in pairs
                if p.uid is not None and p.key is not None and p.key not in entries
                and not p.placeholder]

    def _arrivals(self, pairing: FolderPairing, pairs: list[Pair], maildir: Maildir,
                  entries: dict[str, Entry]) -> list[moves.Arrival]:
        paired = {p.key for p in pairs}
        out = []
        for key, entry in entries.items():
            if key in paired:
                continue
            try:
                data = maildir.read(entry)
            except OSError:
                continue
            header = data.split(b"\n\n", 1)[0]
            if _PLACEHOLDER_RE.search(header):
                continue
            message_id = imap.parse_message_id(header)
            # Only a Message-ID the server can search for lets a killed move be settled.
            out.append(moves.Arrival(pairing.name, key, adoption.server_size(data),
                                     message_id if imap.searchable(message_id) else None,
                                     moves.header_digest(data)))
        return out

    def _with_server_meta(self, gone: list[moves.Gone]) -> list[moves.Gone]:
        """The gone messages still on the server, with size, Message-ID and header."""
        out = []
        by_folder: dict[str, list[moves.Gone]] = {}
        for g in gone:
            by_folder.setdefault(g.folder, []).append(g)
        for folder, items in by_folder.items():
            self.session.select(folder)
            metas = self.session.fetch_meta([g.uid for g in items], with_message_id=True)
            digests = _header_digests(self.session, [g.uid for g in items if g.uid in metas])
            out.extend(replace(g, size=metas[g.uid].size, message_id=metas[g.uid].message_id,
                               header=digests[g.uid])
                       for g in items if g.uid in digests)
        return out

    def _move(self, move: moves.Move) -> None:
        g, a = move.gone, move.arrival
        if "MOVE" not in self.session.capabilities:
            # UID COPY, then expunge: without UIDPLUS only when no other message of the
            # source is marked \Deleted (else the folders' syncs upload the message and
            # leave the source's copy marked, and say so).
            self.session.select(g.folder)
            if not self.session.expunge_is_exact([g.uid]):
                return
        intent, = self.state.add_intents([Intent(a.folder, "upload", None, a.key, g.flags,
                                                 token=a.message_id)])
        crashpoints.step("move-journalled")
        self.session.select(g.folder)
        mapping = self.session.move([g.uid], a.folder)
        crashpoints.step("moved")
        # The source's pair goes now, not at the source's own sync: a user who moves the
        # message back meanwhile would have that sync take it for deleted on the server.
        # The destination's pair holds the server's flags as last synced, so its sync
        # carries any flag the user changed while moving; without the new UID, that
        # sync settles the intent by its Message-ID.
        pair = Pair(mapping[g.uid], a.key, g.flags) if mapping and g.uid in mapping else None
        self.state.complete_move(g.folder, g.uid, g.key, intent, pair)


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


class FolderSync:
    """Sync one folder pairing; the session's selected folder is this one throughout."""

    def __init__(self, session: imap.ImapSession, account: Account, state: State,
                 reporter: Reporter, options: SyncOptions, pairing: FolderPairing,
                 result: FolderResult, plan_lines: list[str],
                 on_work: Callable[[], None] = lambda: None,
                 listed: tuple[str, dict[str, Entry]] | None = None,
                 gmail_store: dict[int, tuple[Maildir, str]] | None = None) -> None:
        self.session, self.account, self.state = session, account, state
        self.gmail_store = gmail_store
        self.gm_ids: dict[int, int] = {}   # UID -> X-GM-MSGID (Gmail)
        self.listed = listed   # (stamp, entries) of a listing earlier in this run
        self.on_work = on_work
        self.reporter, self.options, self.pairing = reporter, options, pairing
        self.result, self.plan_lines = result, plan_lines
        self.name = pairing.name
        self.label = f"account {account.name} folder {pairing.name}"
        self.finished = False            # planned, executed and recorded
        self.changed_meanwhile = False   # a mail client changed a file this run touched
        self.stamp_before: str | None = None
        # The UTF-8 name: the adapter encodes it (modified UTF-7) on the wire, or uses
        # the server's own spelling of a name that is not modified UTF-7.
        self.raw = pairing.name
        if pairing.server is not None and hasattr(session, "remember_raw"):
            session.remember_raw(pairing.name, pairing.server.raw)
        self.maildir = Maildir(folders.resolve(account.maildir, pairing.relpath))
        self.entries: dict[str, Entry] = {}
        self.unpaired_alike = 0   # a first sync's files the pairing missed, see _adopt
        self.window: frozenset[int] | None = None   # sync window: the server UIDs inside

    # Orchestration ----------------------------------------------------------------------
    def run(self) -> None:
        if not self._prepare_folders():
            return
        record = self.state.folder_record(self.name)
        stamp = self.maildir.stamp()   # before the scan: a change after it shows next time
        listed = self.pairing.listed_status
        if listed is not None and self._unchanged_since(record, listed, stamp):
            return                     # LIST-STATUS said enough: not even a SELECT
        status = self.session.select(self.raw, readonly=self.options.dry_run)
        if self._unchanged_since(record, status, stamp):
            return
        self.on_work()   # other folders may now start on more connections
        self.entries = self._scan(stamp)
        if not self.options.dry_run:
            self._settle_intents()
        last = self._last_pairs(status)
        adopting = not last and bool(self.entries) and status.exists > 0
        if adopting:
            remote, last = self._adopt(status)
        else:
            remote = self._remote_snapshot(status, record, last)
        plan = plan_folder(remote, self._local_snapshot(last), last, self._policy())
        if plan.refused:
            raise RefusedError(f"{self.label}: {plan.refused}")
        if adopting:
            self._record_adoption(remote, last, plan)
        if self.options.dry_run:
            self.plan_lines.extend(f"{self.name}: {line}"
                                   for line in describe(plan, self.entries))
            return
        self._execute(plan, remote)
        # The values seen before this run's own changes: the next run then fetches
        # what changed since, ours included, and misses nothing another client did.
        # Push records local flags as last-synced, so its record cannot stand for the
        # server's flags: no HIGHESTMODSEQ then.
        # A windowed run leaves messages outside unpaired: no shortcut for the next run,
        # which must see them when the window has grown (or gone).
        modseq = status.highestmodseq if self.options.mode != "push" \
            and not self._windowed() else None
        self.state.save_folder_record(FolderRecord(
            self.name, self.pairing.relpath, status.uidvalidity, status.uidnext, modseq,
            stamp))
        self.stamp_before = stamp
        self.finished = True
        crashpoints.step("folder-done")

    def _scan(self, stamp: str | None) -> dict[str, Entry]:
        """The folder's files: the listing taken earlier in this run when the folder's
        stamp is still the one taken before it (a settled stamp: any change since would
        have changed it), else a fresh one."""
        if stamp is not None and self.listed is not None and self.listed[0] == stamp:
            return dict(self.listed[1])
        return self.maildir.scan()

    def stamp_after_run(self) -> str | None:
        """The local folder's stamp as this run left it, when a fresh listing taken after
        the stamp shows exactly what the run left (nobody else changed the folder
        meanwhile): recorded, it lets the next run skip the folder. None otherwise: the
        stamp from before the run stays, and the next run looks again."""
        if not self.finished or self.changed_meanwhile:
            return None
        after = self.maildir.stamp()
        if after is None or after == self.stamp_before:
            return None
        left = {e.relpath for e in self.entries.values()}
        return after if self.maildir.relpaths() == left else None

    def _unchanged_since(self, record: FolderRecord | None, status: imap.FolderStatus,
                         stamp: str | None) -> bool:
        """Nothing changed on either side since a completed run: nothing to plan.

        The record holds the server as it was before that run's own changes (a run
        that changed the server is followed by one full look), and the local folder as
        that run left it when nobody else changed it meanwhile (stamp_after_run)."""
        return (record is not None and stamp is not None and record.local_stamp == stamp
                and _modseq_usable(record, status)
                and status.highestmodseq == record.highestmodseq
                and status.uidnext == record.uidnext and not self.options.full
                and not self._windowed()   # the window moves with the clock and the config
                and not self.state.intents(self.name))

    def _policy(self) -> Policy:
        return Policy(mode=self.options.mode, max_delete=self.account.max_delete,
                      allow_mass_delete=self.options.allow_mass_delete,
                      max_size=self.account.max_size, full=self.options.full,
                      window=self.window)

    def _windowed(self) -> bool:
        return bool(getattr(self.account, "max_age", 0) or
                    getattr(self.account, "max_messages", 0))

    def _window_of(self, metas: dict[int, imap.RemoteMeta]) -> frozenset[int] | None:
        """The server UIDs inside the sync window: arrived (INTERNALDATE) within max_age
        days, and among the newest max_messages (by UID, the folder's arrival order)."""
        if not self._windowed():
            return None
        inside = sorted(metas)
        if self.account.max_age:
            cutoff = datetime.now(timezone.utc).timestamp() - self.account.max_age * 86400
            inside = [u for u in inside if metas[u].internaldate is None
                      or metas[u].internaldate.timestamp() >= cutoff]
        if self.account.max_messages:
            inside = inside[-self.account.max_messages:]
        return frozenset(inside)

    def _prepare_folders(self) -> bool:
        """Create the missing side; in a dry run only say so."""
        p = self.pairing
        if p.create_local:
            if self.options.dry_run:
                self.plan_lines.append(f"{self.name}: create local folder {p.relpath or '.'}")
            else:
                self.maildir.create()
        if p.create_remote:
            server_name = self.name
            if self.options.dry_run:
                self.plan_lines.append(f"{self.name}: create server folder {server_name}")
                return False   # nothing on the server to compare with yet
            self.session.create_folder(server_name)
        if not self.options.dry_run and not self.maildir.exists():
            self.maildir.create()
        return True

    # Snapshots --------------------------------------------------------------------------
    def _remote_snapshot(self, status: imap.FolderStatus, record: FolderRecord | None,
                         last: list[Pair]) -> dict[int, RemoteMsg]:
        """The server's messages and flags, fetching as little as CONDSTORE allows."""
        if not _modseq_usable(record, status) or self._windowed():
            # A window needs every message's date: the whole folder, every run.
            metas = self.session.fetch_meta(with_date=bool(self.account.max_age))
            self._note_gm_ids(metas)
            self.window = self._window_of(metas)
            return {uid: RemoteMsg(uid, m.flags, m.size) for uid, m in metas.items()}
        # After a completed run the last-synced flags are the server's flags; only
        # messages whose MODSEQ grew since (new ones included) can differ. Sizes of
        # unchanged messages are not needed by the plan (0 stands for unknown).
        known = {p.uid: RemoteMsg(p.uid, p.flags, 0) for p in last if p.uid is not None}
        if status.highestmodseq == record.highestmodseq and status.uidnext == record.uidnext:
            return known
        try:
            changed = self.session.fetch_changed(record.highestmodseq)
        except (imap.CommandRefused, ProtocolError) as exc:
            if getattr(self.session, "broken", True):
                raise
            # HIGHESTMODSEQ reported but CHANGEDSINCE refused (Yahoo): the whole folder
            # is looked at instead, never a guess from a partial answer.
            self.reporter.detail(f"{self.label}: the server refused CHANGEDSINCE "
                                 f"({exc.message}); looking at every message instead")
            metas = self.session.fetch_meta()
            self._note_gm_ids(metas)
            return {uid: RemoteMsg(uid, m.flags, m.size) for uid, m in metas.items()}
        self._note_gm_ids(changed)
        present = self.session.search_all()
        remote = {uid: msg for uid, msg in known.items() if uid in present}
        remote.update({uid: RemoteMsg(uid, m.flags, m.size) for uid, m in changed.items()
                       if uid in present})
        strays = present - set(remote)
        if strays:   # not paired and not changed: cannot happen, but never guess
            metas = self.session.fetch_meta(sorted(strays))
            self._note_gm_ids(metas)
            remote.update({uid: RemoteMsg(uid, m.flags, m.size) for uid, m in metas.items()})
        return remote

    def _note_gm_ids(self, metas: dict[int, imap.RemoteMeta]) -> None:
        self.gm_ids.update({uid: m.gm_msgid for uid, m in metas.items()
                            if getattr(m, "gm_msgid", None) is not None})

    def _local_snapshot(self, last: list[Pair]) -> dict[str, LocalMsg]:
        placeholders = {p.key for p in last if p.placeholder}
        paired = {p.key for p in last}
        local = {}
        for key, entry in self.entries.items():
            # An unpaired file may be a placeholder whose pair was lost: it must never
            # be uploaded, so look at its header.
            is_placeholder = key in placeholders or (
                key not in paired and self._placeholder_size(entry) is not None)
            local[key] = LocalMsg(key, frozenset(c for c in entry.flags if c in MANAGED),
                                  is_placeholder)
        return local

    def _placeholder_size(self, entry: Entry) -> int | None:
        try:
            head = self.maildir.read_head(entry, 16384)
        except OSError:
            return None
        m = _PLACEHOLDER_RE.search(head.split(b"\n\n", 1)[0])
        return int(m.group(1)) if m else None

    def _last_pairs(self, status: imap.FolderStatus) -> list[Pair]:
        last = self.state.pairs(self.name)
        record = self.state.folder_record(self.name)
        if record is None or record.uidvalidity == status.uidvalidity or not last:
            return last
        return self._repair(last)

    def _repair(self, last: list[Pair]) -> list[Pair]:
        """UIDVALIDITY changed: the server's new UIDs paired with the files the old pairs
        name, by content as a first sync pairs them (mailsync.adoption). The new pairs
        keep their last-synced flags, so the plan sees the changes made since; what
        does not pair is new on its side."""
        metas = self.session.fetch_meta(with_message_id=True)
        old = {p.key: p for p in last if p.key is not None and p.key in self.entries}
        found, _ = self._pair_by_content(metas, old, None)
        pairs = [Pair(uid, key, old[key].flags, old[key].placeholder) for uid, key in found]
        self.reporter.warn(f"{self.label}: the server's UIDVALIDITY changed; re-paired "
                           f"{len(pairs)} messages by content, "
                           f"{len(metas) - len(pairs)} new on the server")
        if not self.options.dry_run:
            self.state.replace_folder_pairs(self.name, pairs)
        return pairs

    # A first sync into a full folder ----------------------------------------------------
    def _adopt(self, status: imap.FolderStatus) -> tuple[dict[int, RemoteMsg], list[Pair]]:
        """No pairs yet, mail on both sides: the messages already on both sides, paired
        by content, so that only the rest is transferred. Their last-synced flags are
        those both sides share: the plan then adds on each side the flags the other
        has, and no flag is lost."""
        metas = self.session.fetch_meta(with_message_id=True)
        self._note_gm_ids(metas)
        remote = {uid: RemoteMsg(uid, m.flags, m.size) for uid, m in metas.items()}
        found, local = self._pair_by_content(metas, self.entries, status.uidvalidity)
        pairs = [Pair(uid, key, remote[uid].flags & self._managed_flags(key),
                      local[key].placeholder) for uid, key in found]
        self.unpaired_alike = adoption.unpaired_alike(
            {uid: m.message_id for uid, m in metas.items()}, local, found)
        return remote, pairs

    def _pair_by_content(self, metas: dict[int, imap.RemoteMeta], keys: Iterable[str],
                         uidvalidity: int | None
                         ) -> tuple[list[tuple[int, str]], dict[str, adoption.LocalPrint]]:
        """(uid, key) of the server messages and these files that hold the same message,
        with the files' prints; other tools' traces are read when uidvalidity is given."""
        prints = {uid: adoption.RemotePrint(uid, m.message_id, m.size)
                  for uid, m in metas.items()}
        local = self._local_prints(list(keys), uidvalidity)
        found = adoption.pair_by_content(
            prints, local, lambda uids: self._server_header_prints(uids, metas),
            self._server_hashes, self._local_hash)
        return found, local

    def _record_adoption(self, remote: dict[int, RemoteMsg], pairs: list[Pair],
                         plan: FolderPlan) -> None:
        """Refuse a first sync whose pairing found too little, else record its pairs
        (in one transaction, before any transfer: a crash leaves an ordinary folder)."""
        refusal = adoption.first_sync_refusal(len(remote), len(self.entries), len(pairs),
                                              plan.counts.download, plan.counts.upload,
                                              self.unpaired_alike)
        if refusal and not self.options.allow_mass_copy:
            raise RefusedError(f"{self.label}: {refusal}")
        self.result.paired = len(pairs)
        if self.options.dry_run:
            self.plan_lines.append(f"{self.name}: pair {len(pairs)} message(s) found on "
                                   "both sides (nothing copied)")
        else:
            self.state.put_pairs(self.name, pairs)
            crashpoints.step("adopted")
            self.reporter.detail(f"{self.label}: {len(pairs)} message(s) already on both "
                                 "sides paired, not copied")

    def _local_prints(self, keys: list[str], uidvalidity: int | None
                      ) -> dict[str, adoption.LocalPrint]:
        hints = (traces.server_uid_hints(self.maildir.path, keys, uidvalidity)
                 if uidvalidity is not None else {})
        prints = {}
        for key in keys:
            try:
                data = self.maildir.read(self.entries[key])
            except FileNotFoundError:
                continue    # renamed or deleted by a mail client: the plan sees it next run
            header = data.split(b"\n\n", 1)[0]
            size = _PLACEHOLDER_RE.search(header)
            prints[key] = adoption.local_print(key, data, imap.parse_message_id(header),
                                               hints.get(key),
                                               int(size.group(1)) if size else None)
        return prints

    def _server_header_prints(self, uids: list[int], metas: dict[int, imap.RemoteMeta]
                              ) -> dict[int, adoption.HeaderPrint]:
        return {uid: adoption.header_print(data, metas[uid].size)
                for uid, data in _fetch_whole(self.session, uids, headers_only=True).items()}

    def _server_hashes(self, uids: list[int]) -> dict[int, str]:
        return {uid: adoption.body_hash(data)
                for uid, data in _fetch_whole(self.session, uids).items()}

    def _local_hash(self, key: str) -> str:
        entry = self._entry(key)
        return adoption.body_hash(self.maildir.read(entry)) if entry else ""

    def _managed_flags(self, key: str) -> frozenset[str]:
        return frozenset(c for c in self.entries[key].flags if c in MANAGED)

    # Settling what a crash left ---------------------------------------------------------
    def _settle_intents(self) -> None:
        intents = self.state.intents(self.name)
        for intent in intents:
            if intent.kind == "download":
                self._settle_download(intent)
            elif intent.kind == "upload":
                self._settle_upload(intent)
        self._settle_flags([i for i in intents if i.kind in ("flags-remote", "flags-local")])

    def _settle_flags(self, intents: list[Intent]) -> None:
        """A flag change journalled but not recorded: record its pair if the side it
        changed shows the wanted flags (its IO ran), else drop it (the plan redoes it)."""
        if not intents:
            return
        uids = [i.uid for i in intents if i.kind == "flags-remote" and i.uid is not None]
        metas = self.session.fetch_meta(uids) if uids else {}
        done = []
        for intent in intents:
            add, _, remove = (intent.token or "+-").partition("-")
            if intent.kind == "flags-remote":
                meta = metas.get(intent.uid)
                ran = (meta is not None and set(add[1:]) <= meta.flags
                       and not set(remove) & meta.flags)
            else:
                entry = self.entries.get(intent.key) if intent.key else None
                ran = entry is not None and (frozenset(c for c in entry.flags if c in MANAGED)
                                             == frozenset(add[1:]))
            if ran:
                done.append(Pair(intent.uid, intent.key, intent.flags, intent.placeholder))
        self.state.complete(self.name, intents, done)

    def _settle_download(self, intent: Intent) -> None:
        if intent.key in self.entries:
            pair = Pair(intent.uid, intent.key, intent.flags, intent.placeholder)
            self.state.complete(self.name, [intent], [pair])
        else:
            self.maildir.discard_tmp(intent.key)   # never renamed: maybe incomplete
            self.state.complete(self.name, [intent], [])

    def _settle_upload(self, intent: Intent) -> None:
        uid = self._find_upload(intent.token)
        pairs = [Pair(uid, intent.key, intent.flags)] if uid is not None else []
        self.state.complete(self.name, [intent], pairs)

    def _find_upload(self, token: str | None) -> int | None:
        """The uid of an upload whose reply was lost: the newest unpaired match."""
        found = _unpaired_matches(self.session, self.state, self.name, token)
        return max(found) if found else None

    # Execution --------------------------------------------------------------------------
    def _execute(self, plan: FolderPlan, remote: dict[int, RemoteMsg]) -> None:
        actions = list(plan.actions)
        self._download([a for a in actions if isinstance(a, Download)], remote)
        self._upgrade([a for a in actions if isinstance(a, UpgradePlaceholder)], remote)
        self._upload([a for a in actions if isinstance(a, Upload)])
        self._set_remote_flags([a for a in actions if isinstance(a, SetRemoteFlags)])
        self._set_local_flags([a for a in actions if isinstance(a, SetLocalFlags)])
        self._record([a for a in actions if isinstance(a, Record)])
        self._expunge_remote([a for a in actions if isinstance(a, ExpungeRemote)])
        self._delete_local([a for a in actions if isinstance(a, DeleteLocal)])
        self._forget([a for a in actions if isinstance(a, Forget)])

    def _download(self, actions: list[Download], remote: dict[int, RemoteMsg]) -> None:
        if not actions:
            return
        total = sum(remote[a.uid].size for a in actions)
        self.reporter.transfer_started(f"{self.account.name}/{self.name}", len(actions), total)
        try:
            for batch in _batches(actions, lambda a: remote[a.uid].size):
                self._download_batch(batch, remote)
        finally:
            self.reporter.transfer_finished()

    def _download_batch(self, batch: list[Download], remote: dict[int, RemoteMsg]) -> None:
        intents = self.state.add_intents(
            Intent(self.name, "download", a.uid, unique_name(), a.flags, a.headers_only)
            for a in batch)
        crashpoints.step("download-journalled")
        by_uid = {i.uid: i for i in intents}
        files: dict[int, TmpFile] = {}
        complete: set[int] = set()

        def sink_for(uid: int) -> TmpFile:
            files[uid] = self.maildir.open_tmp(by_uid[uid].key)
            return files[uid]

        def done(uid: int, nbytes: int) -> None:
            if by_uid[uid].placeholder:
                files[uid].write(placeholder_note(remote[uid].size))
            files[uid].close(durable=False)   # made durable with the batch
            complete.add(uid)
            self.result.bytes_downloaded += nbytes
            self.reporter.transferred(remote[uid].size, nbytes)
            crashpoints.step("downloaded")

        sizes = {u: remote[u].size for u in by_uid}
        stop: MailsyncError | None = None
        copied: set[int] = set()
        try:
            copied = self._copy_stored(intents, sink_for, complete, remote)
            full = [i.uid for i in intents if not i.placeholder and i.uid not in copied]
            heads = [i.uid for i in intents if i.placeholder]
            delivered = copied | self.session.fetch_bodies(full, sink_for, done, sizes=sizes)
            delivered |= self.session.fetch_bodies(heads, _PlaceholderSinks(sink_for), done,
                                                   headers_only=True, sizes=sizes)
        except (Interrupted, TemporaryError) as exc:
            # A signal, or the link failed (not a server breaking the protocol: then no
            # message of the batch is trusted): record the messages already complete (a link
            # that drops every few MB still makes progress), then stop.
            stop, delivered = exc, set(complete)
            for uid, f in files.items():
                if uid not in complete:
                    f.abort()
        except BaseException:
            for uid, f in files.items():
                f.abort()
            raise
        if delivered:
            self.maildir.make_durable()   # before any of them is renamed into place
        pairs = []
        for intent in intents:
            if intent.uid in delivered:
                flags = "".join(sorted(intent.flags))
                self.entries[intent.key] = self.maildir.publish_as(intent.key, intent.key,
                                                                   flags)
                pairs.append(Pair(intent.uid, intent.key, intent.flags, intent.placeholder))
        self.maildir.sync_dirs()
        crashpoints.step("download-published")
        self.state.complete(self.name, intents, pairs)
        copies = sum(1 for p in pairs if p.uid in copied)
        self.result.downloaded += len(pairs) - copies
        self.result.copied += copies
        if self.gmail_store is not None:
            for p in pairs:
                gm_id = self.gm_ids.get(p.uid)
                if gm_id is not None and not p.placeholder:
                    self.gmail_store.setdefault(gm_id, (self.maildir, p.key))
        if stop is not None:
            raise stop

    def _copy_stored(self, intents: list[Intent], sink_for: Callable[[int], TmpFile],
                     complete: set[int], remote: dict[int, RemoteMsg]) -> set[int]:
        """Gmail: the messages of this batch already stored under another label this run,
        copied from there instead of downloaded again (the UIDs done)."""
        if not self.gmail_store:
            return set()
        copied = set()
        for intent in intents:
            stored = self.gmail_store.get(self.gm_ids.get(intent.uid, -1))
            if intent.placeholder or stored is None:
                continue
            maildir, key = stored
            entry = maildir.find(key)
            try:
                data = maildir.read(entry) if entry is not None else None
            except OSError:
                data = None    # moved or deleted by a mail client: downloaded instead
            if data is None:
                continue
            tmp = sink_for(intent.uid)
            tmp.write(data)
            tmp.close(durable=False)
            complete.add(intent.uid)
            copied.add(intent.uid)
            self.reporter.transferred(remote[intent.uid].size)
        return copied

    def _upgrade(self, actions: list[UpgradePlaceholder], remote: dict[int, RemoteMsg]) -> None:
        """Upgrades are downloads in the summary: in the progress too."""
        if not actions:
            return
        self.reporter.transfer_started(f"{self.account.name}/{self.name}", len(actions),
                                       sum(remote[a.uid].size for a in actions
                                           if a.uid in remote))
        try:
            self._upgrade_each(actions, remote)
        finally:
            self.reporter.transfer_finished()

    def _upgrade_each(self, actions: list[UpgradePlaceholder],
                      remote: dict[int, RemoteMsg]) -> None:
        for action in actions:
            before = self.entries.get(action.key)       # as planned from
            if self._entry(action.key) is None or action.uid not in remote:
                continue
            name = unique_name()
            holder: list[TmpFile] = []

            def sink_for(uid: int) -> TmpFile:
                holder.append(self.maildir.open_tmp(name))
                return holder[0]

            def done(uid: int, nbytes: int) -> None:
                holder[0].close()
                self.result.bytes_downloaded += nbytes
                self.reporter.transferred(remote[uid].size, nbytes)

            got = self.session.fetch_bodies([action.uid], sink_for, done,
                                            sizes={action.uid: remote[action.uid].size})
            if action.uid not in got:
                continue
            # Where the placeholder is now: a mail client may have re-flagged or deleted
            # it while its body came (replacing a stale name would make a second file).
            entry = self._entry(action.key)
            if entry is None:
                self.maildir.discard_tmp(name)   # deleted: the next run sees to that
                continue
            entry = self.maildir.replace(entry, name)
            letters = _flags_applied(before or entry, entry, action.flags)
            if letters != action.flags:   # the next run must look, not skip the folder
                self.changed_meanwhile = True
            self.entries[action.key] = self.maildir.set_flags(entry, letters, MANAGED)
            self.maildir.sync_dirs()
            self.state.put_pairs(self.name, [action.pair_after()])
            self.result.downloaded += 1

    def _upload(self, actions: list[Upload]) -> None:
        for action in actions:
            entry = self._entry(action.key)
            if entry is None:
                continue   # deleted by the user meanwhile: the next run sees that
            data = self.maildir.read(entry)
            intent, = self.state.add_intents([Intent(self.name, "upload", None, action.key,
                                                     action.flags, token=_token(data))])
            crashpoints.step("upload-journalled")
            when = _mtime(self.maildir.path / entry.relpath)
            uid = self.session.append(self.raw, data, action.flags, when)
            crashpoints.step("uploaded")
            if uid is None:
                uid = self._find_upload(intent.token)
            if uid is None:
                raise ProtocolError(f"{self.label}: cannot learn the UID of an uploaded "
                                    "message (no UIDPLUS, no Message-ID)",
                                    "the next run settles it; report the server")
            if getattr(self.session, "gmail", False) and not self.session.fetch_meta([uid]):
                # Gmail accepts the APPEND of a message it holds under another label and
                # drops it (a new UID every time): kept locally, never uploaded again, and
                # never taken for a message expunged on the server.
                self.state.complete(self.name, [intent], [Pair(None, action.key, action.flags)])
                self.result.skipped += 1
                self.reporter.warn(f"{self.label}: Gmail dropped the upload of {action.key} "
                                   "(it has the message under another label); kept "
                                   "locally, not uploaded again")
                continue
            self.state.complete(self.name, [intent], [action.pair_after(uid=uid)])
            self.result.uploaded += 1

    def _set_remote_flags(self, actions: list[SetRemoteFlags]) -> None:
        if not actions:
            return
        intents = self.state.add_intents(_flag_intent(self.name, "flags-remote", a.pair,
                                                      a.add, a.remove) for a in actions)
        for (add, remove), uids in _grouped(actions).items():
            self.session.add_flags(uids, add)
            self.session.remove_flags(uids, remove)
        crashpoints.step("remote-flags")
        self.state.complete(self.name, intents, [a.pair_after() for a in actions])
        self.result.flags_changed += len(actions)

    def _set_local_flags(self, actions: list[SetLocalFlags]) -> None:
        if not actions:
            return
        intents = self.state.add_intents(_flag_intent(self.name, "flags-local", a.pair,
                                                      a.flags) for a in actions)
        done = []
        for action in actions:
            before, entry = self.entries.get(action.key), self._entry(action.key)
            if entry is None:
                continue
            letters = _flags_applied(before or entry, entry, action.flags)
            if letters != action.flags:   # the next run must look, not skip the folder
                self.changed_meanwhile = True
            self.entries[action.key] = self.maildir.set_flags(entry, letters, MANAGED)
            done.append(action)
        if done:
            self.maildir.sync_dirs()
            crashpoints.step("local-flags")
        self.state.complete(self.name, intents, [a.pair_after() for a in done])
        self.result.flags_changed += len(done)

    def _record(self, actions: list[Action]) -> None:
        if actions:
            self.state.put_pairs(self.name, [a.pair_after() for a in actions])

    def _expunge_remote(self, actions: list[ExpungeRemote]) -> None:
        if not actions:
            return
        uids = [a.uid for a in actions]
        # Two commands: a run that dies between them leaves the messages marked \Deleted,
        # which the next run's plan takes as agreeing with the local deletion.
        self.session.mark_deleted(uids)
        crashpoints.step("marked-deleted")
        left = self.session.expunge_marked(uids) or set()
        crashpoints.step("expunged")
        done = [a for a in actions if a.uid not in left]
        self.state.forget_pairs(self.name, [(a.uid, a.key) for a in done])
        self.result.deleted_remote += len(done)
        if left:
            # No UIDPLUS, and other messages are marked \Deleted: a plain EXPUNGE would
            # remove them too. Ours stay marked (their pairs too): a later run expunges.
            self.result.left_marked += len(left)
            self.reporter.warn(f"{self.label}: {len(left)} message(s) deleted locally are "
                               "only marked deleted on the server: other messages there "
                               "are marked too and the server has no UIDPLUS to expunge "
                               "just ours; a later run expunges them")

    def _delete_local(self, actions: list[DeleteLocal]) -> None:
        if not actions:
            return
        for action in actions:
            entry = self._entry(action.key)
            if entry is not None:
                self.maildir.remove(entry)
                self.entries.pop(action.key, None)
        self.maildir.sync_dirs()
        crashpoints.step("deleted-local")
        self.state.forget_pairs(self.name, [(a.uid, a.key) for a in actions])
        self.result.deleted_local += len(actions)

    def _forget(self, actions: list[Action]) -> None:
        if actions:
            self.state.forget_pairs(self.name, [(a.uid, a.key) for a in actions])

    def _entry(self, key: str) -> Entry | None:
        """The file of key now: a mail client may have renamed it since the scan."""
        entry = self.entries.get(key)
        if entry is not None and (self.maildir.path / entry.relpath).exists():
            return entry
        return self.maildir.find(key)


class _PlaceholderSinks:
    """Wraps sink_for so a header block becomes a readable placeholder's header."""

    def __init__(self, sink_for) -> None:
        self.sink_for = sink_for

    def __call__(self, uid: int) -> "_HeaderRewriter":
        return _HeaderRewriter(self.sink_for(uid))


class _HeaderRewriter:
    def __init__(self, sink: TmpFile) -> None:
        self.sink = sink

    def write(self, data: bytes) -> None:
        self.sink.write(placeholder_header(data))


_MIME_HEADERS = re.compile(rb"^(Content-Type|Content-Transfer-Encoding|MIME-Version):",
                           re.I | re.M)


def _modseq_usable(record: FolderRecord | None, status: imap.FolderStatus) -> bool:
    return (record is not None and record.uidvalidity == status.uidvalidity
            and record.highestmodseq is not None and status.highestmodseq is not None
            and status.highestmodseq >= record.highestmodseq)


def placeholder_header(header: bytes) -> bytes:
    """The original header with its MIME structure set aside, so readers show the note."""
    header = header.rstrip(b"\n")
    header = _MIME_HEADERS.sub(lambda m: b"X-Mailsync-Original-" + m.group(0), header)
    return header + b"\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"


def placeholder_note(size: int) -> bytes:
    return (PLACEHOLDER_HEADER + b": size=%d\n\n" % size
            + (f"[mailsync] This message is {size:,} bytes and was downloaded headers-first.\n"
               "Flag it (F) in your mail client, or run `mailsync sync --full`, and the next\n"
               "sync replaces this note with the whole message.\n").encode())


def _flag_intent(folder: str, kind: str, pair: Pair, add: Iterable[str],
                 remove: Iterable[str] = ()) -> Intent:
    """A flag change to journal: the pair to record once it ran, and as token
    "+ADD-REMOVE" (letters wanted present / absent on the side it changes; for the
    local side ADD is the whole set of letters the file gets)."""
    token = "+" + "".join(sorted(add)) + "-" + "".join(sorted(remove))
    return Intent(folder, kind, pair.uid, pair.key, pair.flags, pair.placeholder, token)


def _flags_applied(before: Entry, now: Entry, wanted: frozenset[str]) -> frozenset[str]:
    """The managed flags for a file planned to get `wanted` when it was `before` and
    is `now`: the plan's changes on top of any a mail client made meanwhile (the next
    run carries those to the server as usual)."""
    was = frozenset(c for c in before.flags if c in MANAGED)
    has = frozenset(c for c in now.flags if c in MANAGED)
    return (has - (was - wanted)) | (wanted - was)


def _unpaired_matches(session: imap.ImapSession, state: State, folder: str,
                      token: str | None) -> list[int]:
    """The UIDs of folder (the selected one) that no pair holds and that match an
    upload's token (see _token): where an upload whose UID went unrecorded may be."""
    if not token:
        return []
    paired = {p.uid for p in state.pairs(folder) if p.uid is not None}
    if token.startswith("size:"):
        size, _, digest = token[5:].partition(":")
        metas = session.fetch_meta()
        found = [u for u, m in metas.items() if m.size == int(size) and u not in paired]
        if digest:   # (a token of an older version has the size alone)
            found = [u for u, d in _header_digests(session, found).items() if d == digest]
        return found
    return [u for u in session.find_by_message_id(token) if u not in paired]


def _header_digests(session: imap.ImapSession, uids: list[int]) -> dict[int, str]:
    """moves.header_digest of each of these messages of the selected folder that the
    server still has."""
    return {uid: moves.header_digest(header)
            for uid, header in _fetch_whole(session, uids, headers_only=True).items()}


def _fetch_whole(session: imap.ImapSession, uids: list[int],
                 headers_only: bool = False) -> dict[int, bytes]:
    """These messages (or their headers) of the selected folder, in memory: only for
    the few a comparison needs, never for a transfer."""
    found: dict[int, io.BytesIO] = {}
    session.fetch_bodies(uids, lambda uid: found.setdefault(uid, io.BytesIO()),
                         lambda uid, n: None, headers_only=headers_only)
    return {uid: data.getvalue() for uid, data in found.items()}


def _token(data: bytes) -> str:
    """How an upload whose UID went unrecorded is found again: its Message-ID where the
    server can search for it, else its size and header digest ("size:N:DIGEST")."""
    message_id = imap.parse_message_id(data.split(b"\n\n", 1)[0])
    if imap.searchable(message_id):
        return message_id
    return f"size:{adoption.server_size(data)}:{moves.header_digest(data)}"


def _mtime(path: os.PathLike) -> datetime | None:
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, timezone.utc)
    except OSError:
        return None


def _grouped(actions: list[SetRemoteFlags]) -> dict[tuple[frozenset, frozenset], list[int]]:
    groups: dict[tuple[frozenset, frozenset], list[int]] = {}
    for a in actions:
        groups.setdefault((a.add, a.remove), []).append(a.uid)
    return groups


def _batches(actions: list, size_of) -> Iterable[list]:
    batch, total = [], 0
    for a in actions:
        if batch and (len(batch) >= BATCH_MESSAGES or total + size_of(a) > BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(a)
        total += size_of(a)
    if batch:
        yield batch


def describe(plan: FolderPlan, entries: dict[str, Entry] | None = None) -> list[str]:
    """The plan in words, one line per action, for --dry-run. Flag changes on either
    side in one notation: the letters added and removed (+S -F); entries, the local
    messages as planned from, give the local side's letters before."""
    lines = []   # Record and Forget only touch the state: nothing to show
    for a in plan.actions:
        if isinstance(a, Download):
            lines.append(f"download UID {a.uid}" + (" (headers first)" if a.headers_only
                                                      else ""))
        elif isinstance(a, Upload):
            lines.append(f"upload local message {a.key}")
        elif isinstance(a, UpgradePlaceholder):
            lines.append(f"download the whole of UID {a.uid} for placeholder {a.key}")
        elif isinstance(a, SetRemoteFlags):
            lines.append(f"flags on the server, UID {a.uid}: {_flag_change(a.add, a.remove)}")
        elif isinstance(a, SetLocalFlags):
            entry = (entries or {}).get(a.key)
            before = frozenset(c for c in entry.flags if c in MANAGED) if entry else None
            change = (_flag_change(a.flags - before, before - a.flags) if before is not None
                      else _flag_change(a.flags, frozenset(MANAGED) - a.flags))
            lines.append(f"flags locally, {a.key}: {change}")
        elif isinstance(a, ExpungeRemote):
            lines.append(f"expunge UID {a.uid} on the server (deleted locally)")
        elif isinstance(a, DeleteLocal):
            lines.append(f"delete local {a.key} (expunged on the server)")
    return lines


def _flag_change(add: Iterable[str], remove: Iterable[str]) -> str:
    """Maildir flag letters added and removed: "+FS -T" (a side left out when empty)."""
    parts = [f"{sign}{''.join(sorted(letters))}" for sign, letters in (("+", add), ("-", remove))
             if letters]
    return " ".join(parts) or "unchanged"

