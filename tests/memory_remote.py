"""An IMAP server in memory: mailsync.contracts.RemoteStore (and what an account's run
asks of a session besides) over Python dicts, for tests of the real engine that need no
Dovecot, and for server behaviour no real server here shows on demand (hostile folder
names, Gmail's labels).

tests/test_contracts.py runs one suite against this store and against the IMAP driver on
a real Dovecot (with and without UIDPLUS), so the two cannot drift apart. Flags are
Maildir letters (T is \\Deleted); bodies are LF-ended, sizes the CRLF sizes a server
reports. Capabilities are chosen per server: UIDPLUS, MOVE, CONDSTORE, Gmail's labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Collection, Iterable, Mapping

from mailsync.contracts import (Changes, CommandRefused, FolderStatus, Namespaces, RemoteMeta,
                                ServerFolder, Sink)
from mailsync.headers import parse_message_id, searchable


def crlf_size(body: bytes) -> int:
    return len(body) + body.count(b"\n")


def header_block(body: bytes) -> bytes:
    """What BODY.PEEK[HEADER] gives: the header and the empty line after it."""
    head, sep, _ = body.partition(b"\n\n")
    return head + b"\n\n" if sep else body


@dataclass
class MemoryFolder:
    uidvalidity: int
    messages: dict[int, list] = field(default_factory=dict)   # uid -> [body, letters]
    uidnext: int = 1
    modseqs: dict[int, int] = field(default_factory=dict)
    dates: dict[int, datetime] = field(default_factory=dict)
    highestmodseq: int = 1
    vanished: dict[int, int] = field(default_factory=dict)   # uid -> modseq of its expunge

    def add(self, body: bytes, letters: Iterable[str] = "",
            date: datetime | None = None) -> int:
        """A message delivered to this folder (by the server's own delivery)."""
        uid = self.uidnext
        self.uidnext += 1
        self.messages[uid] = [body, set(letters)]
        self.dates[uid] = date or datetime.now(timezone.utc)
        self.touch(uid)
        return uid

    def touch(self, uid: int) -> None:
        self.highestmodseq += 1
        self.modseqs[uid] = self.highestmodseq

    def expunge(self, uids: Iterable[int]) -> None:
        for uid in uids:
            if self.messages.pop(uid, None) is not None:
                self.modseqs.pop(uid, None)
                self.dates.pop(uid, None)
                self.highestmodseq += 1
                self.vanished[uid] = self.highestmodseq

    def status(self, condstore: bool) -> FolderStatus:
        return FolderStatus(self.uidvalidity, self.uidnext, len(self.messages),
                            self.highestmodseq if condstore else None)


class MemoryServer:
    """Folders by UTF-8 name; `log` records every command that changes something."""

    def __init__(self, delimiter: str | None = "/", *, uidplus: bool = True,
                 move: bool = True, condstore: bool = True, qresync: bool | None = None,
                 gmail: bool = False, vanished_lies: bool = False) -> None:
        self.delimiter = delimiter
        self.uidplus, self.can_move, self.condstore = uidplus, move, condstore
        self.qresync = condstore if qresync is None else qresync
        self.vanished_lies = vanished_lies   # VANISHED names every UID asked about (a
        #                                      broken server: it must delete nothing)
        self.gmail = gmail
        self.folders: dict[str, MemoryFolder] = {}
        self.log: list[tuple] = []
        self._validity = 1000
        self.gm_ids: dict[bytes, int] = {}    # Gmail: one id per message content

    def folder(self, name: str) -> MemoryFolder:
        """The folder name, made if missing."""
        if name not in self.folders:
            self._validity += 1
            self.folders[name] = MemoryFolder(self._validity)
        return self.folders[name]

    def reset_uidvalidity(self, name: str) -> None:
        """What a server rebuilding its index does: the same messages under new UIDs."""
        old = self.folders.pop(name)
        fresh = self.folder(name)
        for uid in sorted(old.messages):
            fresh.add(old.messages[uid][0], old.messages[uid][1], old.dates.get(uid))

    def session(self) -> "MemorySession":
        return MemorySession(self)

    def gm_id(self, body: bytes) -> int:
        return self.gm_ids.setdefault(body, len(self.gm_ids) + 1)


class MemorySession:
    """One connection to a MemoryServer."""

    def __init__(self, server: MemoryServer) -> None:
        self.server = server
        self.delimiter = server.delimiter
        self.namespaces = Namespaces("", server.delimiter)
        self.gmail, self.can_move = server.gmail, server.can_move
        self.broken = False
        self.selected: MemoryFolder | None = None
        self.readonly = True
        caps = {"IMAP4REV1"} | {c for c, on in (("UIDPLUS", server.uidplus),
                                                ("MOVE", server.can_move),
                                                ("CONDSTORE", server.condstore),
                                                ("QRESYNC", server.qresync),
                                                ("X-GM-EXT-1", server.gmail)) if on}
        self.capabilities = frozenset(caps)

    # The account's operations ------------------------------------------------------------
    def list_folders(self, with_status: bool = False) -> list[ServerFolder]:
        return [ServerFolder(name, name, self.delimiter, frozenset(), True, True)
                for name in self.server.folders]

    def remember_raw(self, name: str, raw: str) -> None:
        pass   # names are kept as given

    @staticmethod
    def unsendable(raw: str) -> bool:
        return False   # no wire here: any name is used as given (hostile-name tests)

    def logout(self) -> None:
        self.selected = None

    def abort(self) -> None:
        self.selected = None

    # RemoteStore ---------------------------------------------------------------------------
    def select(self, folder: str, readonly: bool = False) -> FolderStatus:
        if folder not in self.server.folders:
            raise CommandRefused(f"SELECT {folder!r}: no such folder")
        self.selected, self.readonly = self.server.folders[folder], readonly
        return self.selected.status(self.server.condstore)

    def status(self, folder: str) -> FolderStatus:
        if folder not in self.server.folders:
            raise CommandRefused(f"STATUS {folder!r}: no such folder")
        return self.server.folders[folder].status(self.server.condstore)

    def create_folder(self, name: str) -> None:
        self.server.log.append(("create", name))
        self.server.folder(name)

    def fetch_meta(self, uids: str | Iterable[int] = "1:*", with_message_id: bool = False,
                   with_date: bool = False) -> dict[int, RemoteMeta]:
        f = self._selected()
        wanted = sorted(f.messages) if isinstance(uids, str) else sorted(set(uids))
        return {uid: self._meta(f, uid, with_message_id) for uid in wanted
                if uid in f.messages}

    def fetch_changed(self, since_modseq: int) -> dict[int, RemoteMeta]:
        if not self.server.condstore:
            raise CommandRefused("FETCH CHANGEDSINCE: no CONDSTORE")
        f = self._selected()
        return {uid: self._meta(f, uid, False) for uid in sorted(f.messages)
                if f.modseqs[uid] > since_modseq}

    def changes_since(self, since_modseq: int, candidates: Collection[int]) -> Changes:
        changed = self.fetch_changed(since_modseq)
        if not self.server.qresync:
            return Changes(changed, None)
        gone = self._selected().vanished
        return Changes(changed, frozenset(u for u in candidates
                                          if gone.get(u, 0) > since_modseq
                                          or self.server.vanished_lies))

    def search_all(self) -> set[int]:
        return set(self._selected().messages)

    def fetch_bodies(self, uids: Iterable[int], sink_for: Callable[[int], Sink],
                     done: Callable[[int, int], None], headers_only: bool = False,
                     sizes: Mapping[int, int] | None = None) -> set[int]:
        f = self._selected()
        got = set()
        for uid in sorted(set(uids)):
            if uid not in f.messages:
                continue
            body = f.messages[uid][0]
            data = header_block(body) if headers_only else body
            sink_for(uid).write(data)
            done(uid, len(data))
            got.add(uid)
        return got

    def find_by_message_id(self, message_id: str) -> list[int]:
        if not searchable(message_id.strip()):
            return []
        f = self._selected()
        return [uid for uid, (body, _) in sorted(f.messages.items())
                if parse_message_id(body.split(b"\n\n")[0]) == message_id.strip()]

    def append(self, folder: str, message: bytes, letters: Iterable[str] = frozenset(),
               when: datetime | None = None) -> int | None:
        if folder not in self.server.folders:
            raise CommandRefused(f"APPEND {folder!r}: no such folder")
        self.server.log.append(("append", folder, message))
        uid = self.server.folders[folder].add(message, letters, when)
        return uid if self.server.uidplus else None

    def add_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        self._store(uids, set(letters), add=True)

    def remove_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        self._store(uids, set(letters), add=False)

    def mark_deleted(self, uids: Iterable[int]) -> None:
        self._store(uids, {"T"}, add=True)

    def expunge_marked(self, uids: Iterable[int]) -> set[int]:
        uids = sorted(set(uids))
        if not uids:
            return set()
        if not self.expunge_is_exact(uids):
            return set(uids)
        f = self._selected()
        self._write("expunge", tuple(uids))
        f.expunge([u for u in uids if u in f.messages and "T" in f.messages[u][1]])
        return set()

    def expunge_is_exact(self, uids: Iterable[int]) -> bool:
        if self.server.uidplus:
            return True
        marked = {u for u, (_, letters) in self._selected().messages.items() if "T" in letters}
        return marked <= set(uids)

    def move(self, uids: Iterable[int], dest: str) -> dict[int, int] | None:
        uids = sorted(set(uids))
        if dest not in self.server.folders:
            raise CommandRefused(f"MOVE to {dest!r}: no such folder")
        f, target = self._selected(), self.server.folders[dest]
        self._write("move", tuple(uids), dest)
        mapping = {}
        for uid in uids:
            if uid in f.messages:
                body, letters = f.messages[uid]
                mapping[uid] = target.add(body, letters, f.dates.get(uid))
        if self.server.can_move:
            f.expunge(mapping)
        else:                                  # COPY, then expunge what it copied
            self.mark_deleted(mapping)
            self.expunge_marked(mapping)
        return mapping if self.server.uidplus else None

    # ---------------------------------------------------------------------------------------
    def _selected(self) -> MemoryFolder:
        assert self.selected is not None, "no folder selected"
        return self.selected

    def _write(self, *entry) -> None:
        assert not self.readonly, f"{entry[0]} on a folder selected read-only"
        self.server.log.append(entry)

    def _store(self, uids: Iterable[int], letters: set[str], add: bool) -> None:
        if not letters:
            return
        uids = tuple(sorted(set(uids)))
        self._write("add_flags" if add else "remove_flags", uids, tuple(sorted(letters)))
        f = self._selected()
        for uid in uids:
            if uid not in f.messages:
                continue   # expunged meanwhile: ignored, as a server does
            before = set(f.messages[uid][1])
            f.messages[uid][1] = before | letters if add else before - letters
            if f.messages[uid][1] != before:
                f.touch(uid)

    def _meta(self, f: MemoryFolder, uid: int, with_message_id: bool) -> RemoteMeta:
        body, letters = f.messages[uid]
        message_id = parse_message_id(body.split(b"\n\n")[0]) if with_message_id else None
        return RemoteMeta(uid, frozenset(letters), frozenset(), crlf_size(body),
                          f.dates.get(uid), message_id,
                          f.modseqs[uid] if self.server.condstore else None,
                          self.server.gm_id(body) if self.server.gmail else None)
