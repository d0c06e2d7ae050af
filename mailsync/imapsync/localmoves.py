"""Messages the user moved between local folders, moved on the server with UID MOVE
before the folders sync (see mailsync.imapsync.moves), instead of uploaded and expunged.

Crash safety: each move is journalled in the destination folder as an upload (token:
the Message-ID) before the MOVE; after it, one transaction records the destination's
pair and forgets the source's. A crash in between is settled by the next run before any
folder syncs (settle_interrupted_moves), else like an interrupted upload: the
destination is searched for the Message-ID."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from mailsync import adoption, crashpoints, folders
from mailsync.imapsync import moves
from mailsync.contracts import CommandRefused, Entry, LocalFolder, RemoteStore
from mailsync.folders import FolderPairing
from mailsync.headers import parse_message_id, searchable
from mailsync.imapsync import recovery
from mailsync.imapsync.placeholders import placeholder_size
from mailsync.reporting import Reporter
from mailsync.state import Intent, State
from mailsync.imapsync.plan import Pair

# relpath -> the local folder there (folders.UnsafeFolderPath for one outside the root)
LocalFolders = Callable[[str], LocalFolder]


class LocalMoves:
    def __init__(self, remote: RemoteStore, local_folder: LocalFolders, account_name: str,
                 state: State, reporter: Reporter, pairings: list[FolderPairing]) -> None:
        self.remote, self.local_folder, self.state = remote, local_folder, state
        self.account_name = account_name
        self.reporter, self.pairings = reporter, pairings
        self.scans: dict[str, tuple[str, dict[str, Entry]]] = {}

    def run(self) -> None:
        changed = self._changed_folders()
        if len(changed) < 2:
            return      # a move changes two folders' directories
        if not any(self.state.synced_keys(pairing.name) - entries.keys()
                   for pairing, _, entries in changed):
            return      # nothing left any folder: flags changed, mail arrived
        changed_pairs = [(pairing, self.state.pairs(pairing.name), local, entries)
                         for pairing, local, entries in changed]
        gone = [g for pairing, pairs, local, entries in changed_pairs
                for g in _gone(pairing, pairs, entries)]
        if not gone:
            return
        arrivals = [a for pairing, pairs, local, entries in changed_pairs
                    for a in _arrivals(pairing, pairs, local, entries)]
        found = moves.match_moves(self._with_server_meta(gone), arrivals)
        for move in found:
            self._move(move)
        if found:
            self.reporter.detail(f"account {self.account_name}: moved {len(found)} "
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
                self.remote.select(folder)
                if self.remote.fetch_meta([uid]):
                    continue              # not moved: the folders' syncs settle it
                self.remote.select(intent.folder)
                found = recovery.unpaired_matches(self.remote, self.state, intent.folder,
                                                  intent.token)
            except CommandRefused:
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
            return self.local_folder(record.relpath).locate(key) is not None
        except folders.UnsafeFolderPath:
            return False

    def _changed_folders(self) -> list[tuple[FolderPairing, LocalFolder, dict[str, Entry]]]:
        """The folders changed locally since the last run, listed; each listing is kept
        in self.scans with the stamp taken before it, for the folder's own sync."""
        out = []
        for pairing in self.pairings:
            record = self.state.folder_record(pairing.name)
            if (record is None or pairing.server is None or not pairing.local_exists
                    or self.state.intents(pairing.name)):
                continue
            try:
                local = self.local_folder(pairing.relpath)
            except folders.UnsafeFolderPath:
                continue   # the folder's own sync reports it
            stamp = local.stamp()
            if stamp is not None and stamp == record.local_stamp:
                continue   # nothing left or arrived here since the last run
            entries = local.scan()
            if stamp is not None:
                self.scans[pairing.name] = (stamp, entries)
            out.append((pairing, local, entries))
        return out

    def _with_server_meta(self, gone: list[moves.Gone]) -> list[moves.Gone]:
        """The gone messages still on the server, with size, Message-ID and header."""
        out = []
        by_folder: dict[str, list[moves.Gone]] = {}
        for g in gone:
            by_folder.setdefault(g.folder, []).append(g)
        for folder, items in by_folder.items():
            self.remote.select(folder)
            metas = self.remote.fetch_meta([g.uid for g in items], with_message_id=True)
            digests = recovery.header_digests(self.remote,
                                              [g.uid for g in items if g.uid in metas])
            out.extend(replace(g, size=metas[g.uid].size, message_id=metas[g.uid].message_id,
                               header=digests[g.uid])
                       for g in items if g.uid in digests)
        return out

    def _move(self, move: moves.Move) -> None:
        g, a = move.gone, move.arrival
        if not self.remote.can_move:
            # UID COPY, then expunge: without UIDPLUS only when no other message of the
            # source is marked \Deleted (else the folders' syncs upload the message and
            # leave the source's copy marked, and say so).
            self.remote.select(g.folder)
            if not self.remote.expunge_is_exact([g.uid]):
                return
        intent, = self.state.add_intents([Intent(a.folder, "upload", None, a.key, g.flags,
                                                 token=a.message_id)])
        crashpoints.step("move-journalled")
        self.remote.select(g.folder)
        mapping = self.remote.move([g.uid], a.folder)
        crashpoints.step("moved")
        # The source's pair goes now, not at the source's own sync: a user who moves the
        # message back meanwhile would have that sync take it for deleted on the server.
        # The destination's pair holds the server's flags as last synced, so its sync
        # carries any flag the user changed while moving; without the new UID, that
        # sync settles the intent by its Message-ID.
        pair = Pair(mapping[g.uid], a.key, g.flags) if mapping and g.uid in mapping else None
        self.state.complete_move(g.folder, g.uid, g.key, intent, pair)


def _gone(pairing: FolderPairing, pairs: list[Pair],
          entries: dict[str, Entry]) -> list[moves.Gone]:
    return [moves.Gone(pairing.name, p.uid, p.key, p.flags, 0, None)
            for p in pairs
            if p.uid is not None and p.key is not None and p.key not in entries
            and not p.placeholder]


def _arrivals(pairing: FolderPairing, pairs: list[Pair], local: LocalFolder,
              entries: dict[str, Entry]) -> list[moves.Arrival]:
    paired = {p.key for p in pairs}
    out = []
    for key, entry in entries.items():
        if key in paired:
            continue
        try:
            # as the server holds it: without the X-TUID line mbsync puts in its files
            data = adoption.comparable(local.read(entry))
        except OSError:
            continue
        header = data.split(b"\n\n", 1)[0]
        if placeholder_size(header) is not None:
            continue
        message_id = parse_message_id(header)
        # Only a Message-ID the server can search for lets a killed move be settled.
        out.append(moves.Arrival(pairing.name, key, adoption.server_size(data),
                                 message_id if searchable(message_id) else None,
                                 moves.header_digest(data)))
    return out
