"""The engine: one folder pairing synced, settle -> snapshot -> plan -> execute.

The decision is syncplan.plan_folder's; this module gathers its inputs and carries
its actions out, in the plan's order (transfers, flags, deletions), journalling every
transfer before its IO (see recovery) so that a crash at any moment is settled by the
next run, never repeated. It reaches the server and the Maildir only through the driver
contracts (mailsync.contracts): a test checks that it imports neither the IMAP nor the
Maildir driver.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable

from mailsync import adoption, crashpoints
from mailsync.batching import batches
from mailsync.config import Account
from mailsync.contracts import (MANAGED, Changes, CommandRefused, Entry, FolderStatus,
                                LocalFolder, Receiving, RemoteMeta, RemoteStore)
from mailsync.errors import Interrupted, MailsyncError, ProtocolError, RefusedError, TemporaryError
from mailsync.folders import FolderPairing
from mailsync.headers import parse_message_id
from mailsync.imapsync import recovery
from mailsync.imapsync.describe import describe
from mailsync.imapsync.gmail import GmailCopies
from mailsync.imapsync.placeholders import HeaderRewriter, placeholder_note, placeholder_size
from mailsync.results import FolderResult
from mailsync.reporting import Reporter
from mailsync.state import FolderRecord, Intent, State
from mailsync.imapsync.plan import (Action, DeleteLocal, Download, ExpungeRemote, FolderPlan,
                               Forget, LocalMsg, Pair, Policy, Record, RemoteMsg,
                               SetLocalFlags, SetRemoteFlags, Upload, UpgradePlaceholder,
                               plan_folder)

BATCH_MESSAGES = 200    # downloads journalled and made durable together
BATCH_BYTES = 32 << 20

@dataclass(frozen=True)
class SyncOptions:
    mode: str
    dry_run: bool = False
    folders: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    allow_mass_copy: bool = False
    full: bool = False


class FolderSync:
    """Sync one folder pairing; the remote store's selected folder is this one throughout."""

    def __init__(self, remote: RemoteStore, local: LocalFolder, account: Account,
                 state: State, reporter: Reporter, options: SyncOptions,
                 pairing: FolderPairing, result: FolderResult, plan_lines: list[str],
                 on_work: Callable[[], None] = lambda: None,
                 listed: tuple[str, dict[str, Entry]] | None = None,
                 gmail: GmailCopies | None = None) -> None:
        self.remote, self.local, self.account, self.state = remote, local, account, state
        self.gmail = gmail
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
        self.entries: dict[str, Entry] = {}
        self.unpaired_alike = 0   # a first sync's files the pairing missed, see _adopt
        self.window: frozenset[int] | None = None   # sync window: the server UIDs inside

    # Orchestration ----------------------------------------------------------------------
    def run(self) -> None:
        if not self._prepare_folders():
            return
        record = self.state.folder_record(self.name)
        stamp = self.local.stamp()   # before the scan: a change after it shows next time
        listed = self.pairing.listed_status
        if listed is not None and self._unchanged_since(record, listed, stamp):
            return                     # LIST-STATUS said enough: not even a SELECT
        status = self.remote.select(self.name, readonly=self.options.dry_run)
        if self._unchanged_since(record, status, stamp):
            return
        self.on_work()   # other folders may now start on more connections
        self.entries = self._scan(stamp)
        if not self.options.dry_run:
            recovery.settle_intents(self.remote, self.local, self.state, self.name,
                                    self.entries)
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
        return self.local.scan()

    def stamp_after_run(self) -> str | None:
        """The local folder's stamp as this run left it, when a fresh listing taken after
        the stamp shows exactly what the run left (nobody else changed the folder
        meanwhile): recorded, it lets the next run skip the folder. None otherwise: the
        stamp from before the run stays, and the next run looks again."""
        if not self.finished or self.changed_meanwhile:
            return None
        after = self.local.stamp()
        if after is None or after == self.stamp_before:
            return None
        left = {e.relpath for e in self.entries.values()}
        return after if self.local.relpaths() == left else None

    def _unchanged_since(self, record: FolderRecord | None, status: FolderStatus,
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

    def _window_of(self, metas: dict[int, RemoteMeta]) -> frozenset[int] | None:
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
                self.local.create()
        if p.create_remote:
            if self.options.dry_run:
                self.plan_lines.append(f"{self.name}: create server folder {self.name}")
                return False   # nothing on the server to compare with yet
            self.remote.create_folder(self.name)
        if not self.options.dry_run and not self.local.exists():
            self.local.create()
        return True

    # Snapshots --------------------------------------------------------------------------
    def _remote_snapshot(self, status: FolderStatus, record: FolderRecord | None,
                         last: list[Pair]) -> dict[int, RemoteMsg]:
        """The server's messages and flags, fetching as little as CONDSTORE allows."""
        if not _modseq_usable(record, status) or self._windowed():
            # A window needs every message's date: the whole folder, every run.
            metas = self.remote.fetch_meta(with_date=bool(self.account.max_age))
            self.window = self._window_of(metas)
            return self._messages(metas)
        # After a completed run the last-synced flags are the server's flags; only
        # messages whose MODSEQ grew since (new ones included) can differ. Sizes of
        # unchanged messages are not needed by the plan (0 stands for unknown).
        known = {p.uid: RemoteMsg(p.uid, p.flags, 0) for p in last if p.uid is not None}
        if status.highestmodseq == record.highestmodseq and status.uidnext == record.uidnext:
            return known
        try:
            changes = self.remote.changes_since(record.highestmodseq, list(known))
        except (CommandRefused, ProtocolError) as exc:
            if self.remote.broken:
                raise
            # HIGHESTMODSEQ reported but CHANGEDSINCE refused (Yahoo): the whole folder
            # is looked at instead, never a guess from a partial answer.
            self.reporter.detail(f"{self.label}: the server refused CHANGEDSINCE "
                                 f"({exc.message}); looking at every message instead")
            return self._messages(self.remote.fetch_meta())
        present = self._present(known, changes, status)
        found = {uid: msg for uid, msg in known.items() if uid in present}
        found.update({uid: msg for uid, msg in self._messages(changes.changed).items()
                      if uid in present})
        strays = present - set(found)
        if strays:   # not paired and not changed: cannot happen, but never guess
            found.update(self._messages(self.remote.fetch_meta(sorted(strays))))
        return found

    def _present(self, known: dict[int, RemoteMsg], changes: Changes,
                 status: FolderStatus) -> set[int]:
        """The folder's UIDs now. From VANISHED (QRESYNC) when the server gave it: the
        UIDs it names are looked up before any is taken for expunged (a wrong answer must
        never delete a local file), and the count must be SELECT's, else every UID is
        listed after all."""
        if changes.vanished is not None:
            gone = set(changes.vanished)
            if gone:
                gone -= set(self.remote.fetch_meta(sorted(gone)))
            present = (set(known) - gone) | set(changes.changed)
            if len(present) == status.exists:
                return present
        return self.remote.search_all()

    def _messages(self, metas: dict[int, RemoteMeta]) -> dict[int, RemoteMsg]:
        """The plan's view of these server messages (Gmail: their ids noted)."""
        self.gm_ids.update({uid: m.gm_msgid for uid, m in metas.items()
                            if m.gm_msgid is not None})
        return {uid: RemoteMsg(uid, m.flags, m.size) for uid, m in metas.items()}

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
            return placeholder_size(self.local.read_head(entry, 16384))
        except OSError:
            return None

    def _last_pairs(self, status: FolderStatus) -> list[Pair]:
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
        metas = self.remote.fetch_meta(with_message_id=True)
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
    def _adopt(self, status: FolderStatus) -> tuple[dict[int, RemoteMsg], list[Pair]]:
        """No pairs yet, mail on both sides: the messages already on both sides, paired
        by content, so that only the rest is transferred. Their last-synced flags are
        those both sides share: the plan then adds on each side the flags the other
        has, and no flag is lost."""
        metas = self.remote.fetch_meta(with_message_id=True)
        remote = self._messages(metas)
        found, local = self._pair_by_content(metas, self.entries, status.uidvalidity)
        pairs = [Pair(uid, key, remote[uid].flags & self._managed_flags(key),
                      local[key].placeholder) for uid, key in found]
        self.unpaired_alike = adoption.unpaired_alike(
            {uid: m.message_id for uid, m in metas.items()}, local, found)
        return remote, pairs

    def _pair_by_content(self, metas: dict[int, RemoteMeta], keys: Iterable[str],
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
        hints = self.local.peer_uids(keys, uidvalidity) if uidvalidity is not None else {}
        prints = {}
        for key in keys:
            try:
                data = self.local.read(self.entries[key])
            except FileNotFoundError:
                continue    # renamed or deleted by a mail client: the plan sees it next run
            header = data.split(b"\n\n", 1)[0]
            prints[key] = adoption.local_print(key, data, parse_message_id(header),
                                               hints.get(key), placeholder_size(header))
        return prints

    def _server_header_prints(self, uids: list[int], metas: dict[int, RemoteMeta]
                              ) -> dict[int, adoption.HeaderPrint]:
        return {uid: adoption.header_print(data, metas[uid].size)
                for uid, data in recovery.fetch_whole(self.remote, uids,
                                                      headers_only=True).items()}

    def _server_hashes(self, uids: list[int]) -> dict[int, str]:
        return {uid: adoption.body_hash(data)
                for uid, data in recovery.fetch_whole(self.remote, uids).items()}

    def _local_hash(self, key: str) -> str:
        entry = self._entry(key)
        return adoption.body_hash(self.local.read(entry)) if entry else ""

    def _managed_flags(self, key: str) -> frozenset[str]:
        return frozenset(c for c in self.entries[key].flags if c in MANAGED)

    # Execution --------------------------------------------------------------------------
    def _execute(self, plan: FolderPlan, remote: dict[int, RemoteMsg]) -> None:
        """The plan's actions in its order (transfers, flags, deletions), each run of
        actions of one kind carried out together."""
        for kind, run in itertools.groupby(plan.actions, type):
            self._carry_out(kind, list(run), remote)

    def _carry_out(self, kind: type, actions: list, remote: dict[int, RemoteMsg]) -> None:
        if kind is Download:
            self._download(actions, remote)
        elif kind is UpgradePlaceholder:
            self._upgrade(actions, remote)
        elif kind is Upload:
            self._upload(actions)
        elif kind is SetRemoteFlags:
            self._set_remote_flags(actions)
        elif kind is SetLocalFlags:
            self._set_local_flags(actions)
        elif kind is Record:
            self.state.put_pairs(self.name, [a.pair_after() for a in actions])
        elif kind is ExpungeRemote:
            self._expunge_remote(actions)
        elif kind is DeleteLocal:
            self._delete_local(actions)
        elif kind is Forget:
            self.state.forget_pairs(self.name, [(a.uid, a.key) for a in actions])
        else:
            raise TypeError(f"no executor for {kind.__name__}")

    def _download(self, actions: list[Download], remote: dict[int, RemoteMsg]) -> None:
        total = sum(remote[a.uid].size for a in actions)
        self.reporter.transfer_started(f"{self.account.name}/{self.name}", len(actions), total)
        try:
            for batch in batches(actions, lambda a: remote[a.uid].size, BATCH_MESSAGES,
                                 BATCH_BYTES):
                self._download_batch(batch, remote)
        finally:
            self.reporter.transfer_finished()

    def _download_batch(self, batch: list[Download], remote: dict[int, RemoteMsg]) -> None:
        """One batch: journalled, fetched into tmp/, made durable and published in one
        step, recorded. A signal or a failed link (not a server breaking the protocol:
        then no message of the batch is trusted) keeps the messages already whole (a link
        that drops every few MB still makes progress), then stops the run."""
        intents = self.state.add_intents(
            Intent(self.name, "download", a.uid, self.local.new_key(), a.flags,
                   a.headers_only) for a in batch)
        crashpoints.step("download-journalled")
        stop: list[MailsyncError] = []
        copied: set[int] = set()

        def write(receiving: Receiving) -> None:
            try:
                copied.update(self._fetch_into(receiving, intents, remote))
            except (Interrupted, TemporaryError) as exc:
                stop.append(exc)

        published = self.local.deliver({i.key: "".join(sorted(i.flags)) for i in intents},
                                       write)
        self.entries.update(published)
        pairs = [Pair(i.uid, i.key, i.flags, i.placeholder) for i in intents
                 if i.key in published]
        crashpoints.step("download-published")
        self.state.complete(self.name, intents, pairs)
        copies = sum(1 for p in pairs if p.uid in copied)
        self.result.downloaded += len(pairs) - copies
        self.result.copied += copies
        if self.gmail is not None:
            self.gmail.note(self.name, self.local,
                            [(self.gm_ids[p.uid], p.key) for p in pairs
                             if p.uid in self.gm_ids and not p.placeholder])
        if stop:
            raise stop[0]

    def _fetch_into(self, receiving: Receiving, intents: list[Intent],
                    remote: dict[int, RemoteMsg]) -> set[int]:
        """Each intent's message written into receiving (headers-first ones as
        placeholders); the UIDs copied from another label (Gmail) instead of fetched."""
        by_uid = {i.uid: i for i in intents}
        sinks = {}

        def sink_for(uid: int):
            sinks[uid] = receiving.open(by_uid[uid].key)
            return sinks[uid]

        def done(uid: int, nbytes: int) -> None:
            if by_uid[uid].placeholder:
                sinks[uid].write(placeholder_note(remote[uid].size))
            receiving.completed(by_uid[uid].key)
            self.result.bytes_downloaded += nbytes
            self.reporter.transferred(remote[uid].size, nbytes)
            crashpoints.step("downloaded")

        copied = self._copy_stored(intents, sink_for, receiving, remote)
        full = [i.uid for i in intents if not i.placeholder and i.uid not in copied]
        heads = [i.uid for i in intents if i.placeholder]
        sizes = {u: remote[u].size for u in by_uid}
        self.remote.fetch_bodies(full, sink_for, done, sizes=sizes)
        self.remote.fetch_bodies(heads, lambda uid: HeaderRewriter(sink_for(uid)), done,
                                 headers_only=True, sizes=sizes)
        return copied

    def _copy_stored(self, intents: list[Intent], sink_for, receiving: Receiving,
                     remote: dict[int, RemoteMsg]) -> set[int]:
        """Gmail: the messages of this batch already stored under another label (this run
        or an earlier one), copied from there instead of downloaded again (the UIDs
        done)."""
        if self.gmail is None:
            return set()
        copied = set()
        for intent in intents:
            gm_msgid = self.gm_ids.get(intent.uid)
            stored = self.gmail.find(gm_msgid) if gm_msgid is not None else None
            if intent.placeholder or stored is None:
                continue
            folder, key = stored
            entry = folder.locate(key)
            try:
                data = folder.read(entry) if entry is not None else None
            except OSError:
                data = None    # moved or deleted by a mail client: downloaded instead
            if data is None:
                continue
            sink_for(intent.uid).write(data)
            receiving.completed(intent.key)
            copied.add(intent.uid)
            self.reporter.transferred(remote[intent.uid].size)
        return copied

    def _upgrade(self, actions: list[UpgradePlaceholder], remote: dict[int, RemoteMsg]) -> None:
        """Upgrades are downloads in the summary: in the progress too."""
        self.reporter.transfer_started(f"{self.account.name}/{self.name}", len(actions),
                                       sum(remote[a.uid].size for a in actions
                                           if a.uid in remote))
        try:
            for action in actions:
                if action.uid in remote:
                    self._upgrade_one(action, remote[action.uid].size)
        finally:
            self.reporter.transfer_finished()

    def _upgrade_one(self, action: UpgradePlaceholder, size: int) -> None:
        before = self.entries.get(action.key)       # as planned from
        if self._entry(action.key) is None:
            return

        def write(receiving: Receiving) -> None:
            def done(uid: int, nbytes: int) -> None:
                receiving.completed(action.key)
                self.result.bytes_downloaded += nbytes
                self.reporter.transferred(size, nbytes)

            self.remote.fetch_bodies([action.uid], lambda uid: receiving.open(action.key),
                                     done, sizes={action.uid: size})

        entry = self.local.replace_content(action.key, write)
        if entry is None:
            return    # expunged, or deleted locally meanwhile: the next run sees to that
        letters = _flags_applied(before or entry, entry, action.flags)
        if letters != action.flags:   # the next run must look, not skip the folder
            self.changed_meanwhile = True
        self.entries[action.key] = self.local.set_flags(entry, letters)
        self.local.settle()
        self.state.put_pairs(self.name, [action.pair_after()])
        self.result.downloaded += 1

    def _upload(self, actions: list[Upload]) -> None:
        for action in actions:
            entry = self._entry(action.key)
            if entry is None:
                continue   # deleted by the user meanwhile: the next run sees that
            # Sent without the X-TUID line mbsync keeps in its files: its own bookkeeping,
            # nothing of the message (a first sync compares without it, too).
            data = adoption.comparable(self.local.read(entry))
            intent, = self.state.add_intents([Intent(self.name, "upload", None, action.key,
                                                     action.flags,
                                                     token=recovery.upload_token(data))])
            crashpoints.step("upload-journalled")
            uid = self.remote.append(self.name, data, action.flags, self.local.received(entry))
            crashpoints.step("uploaded")
            if uid is None:
                uid = recovery.find_upload(self.remote, self.state, self.name, intent.token)
            if uid is None:
                raise ProtocolError(f"{self.label}: cannot learn the UID of an uploaded "
                                    "message (no UIDPLUS, no Message-ID)",
                                    "the next run settles it; report the server")
            if self.remote.gmail and not self.remote.fetch_meta([uid]):
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
        intents = self.state.add_intents(recovery.flag_intent(self.name, "flags-remote",
                                                              a.pair, a.add, a.remove)
                                         for a in actions)
        for (add, remove), uids in _grouped(actions).items():
            self.remote.add_flags(uids, add)
            self.remote.remove_flags(uids, remove)
        crashpoints.step("remote-flags")
        self.state.complete(self.name, intents, [a.pair_after() for a in actions])
        self.result.flags_changed += len(actions)

    def _set_local_flags(self, actions: list[SetLocalFlags]) -> None:
        intents = self.state.add_intents(recovery.flag_intent(self.name, "flags-local",
                                                              a.pair, a.flags)
                                         for a in actions)
        done = []
        for action in actions:
            before, entry = self.entries.get(action.key), self._entry(action.key)
            if entry is None:
                continue
            letters = _flags_applied(before or entry, entry, action.flags)
            if letters != action.flags:   # the next run must look, not skip the folder
                self.changed_meanwhile = True
            self.entries[action.key] = self.local.set_flags(entry, letters)
            done.append(action)
        if done:
            self.local.settle()
            crashpoints.step("local-flags")
        self.state.complete(self.name, intents, [a.pair_after() for a in done])
        self.result.flags_changed += len(done)

    def _expunge_remote(self, actions: list[ExpungeRemote]) -> None:
        uids = [a.uid for a in actions]
        # Two commands: a run that dies between them leaves the messages marked \Deleted,
        # which the next run's plan takes as agreeing with the local deletion.
        self.remote.mark_deleted(uids)
        crashpoints.step("marked-deleted")
        left = self.remote.expunge_marked(uids) or set()
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
        for action in actions:
            entry = self._entry(action.key)
            if entry is not None:
                self.local.remove(entry)
                self.entries.pop(action.key, None)
        self.local.settle()
        crashpoints.step("deleted-local")
        self.state.forget_pairs(self.name, [(a.uid, a.key) for a in actions])
        self.result.deleted_local += len(actions)

    def _entry(self, key: str) -> Entry | None:
        """The file of key now: a mail client may have renamed it since the scan."""
        return self.local.locate(key, self.entries.get(key))


def _modseq_usable(record: FolderRecord | None, status: FolderStatus) -> bool:
    return (record is not None and record.uidvalidity == status.uidvalidity
            and record.highestmodseq is not None and status.highestmodseq is not None
            and status.highestmodseq >= record.highestmodseq)


def _flags_applied(before: Entry, now: Entry, wanted: frozenset[str]) -> frozenset[str]:
    """The managed flags for a file planned to get `wanted` when it was `before` and
    is `now`: the plan's changes on top of any a mail client made meanwhile (the next
    run carries those to the server as usual)."""
    was = frozenset(c for c in before.flags if c in MANAGED)
    has = frozenset(c for c in now.flags if c in MANAGED)
    return (has - (was - wanted)) | (wanted - was)


def _grouped(actions: list[SetRemoteFlags]) -> dict[tuple[frozenset, frozenset], list[int]]:
    groups: dict[tuple[frozenset, frozenset], list[int]] = {}
    for a in actions:
        groups.setdefault((a.add, a.remove), []).append(a.uid)
    return groups
