"""The real folder sync over a folder described the way the planner's tests describe it:
server messages (RemoteMsg), local messages (LocalMsg) and the last-synced pairs. The
server is the in-memory one (tests/memory_remote.py), the Maildir and the state are real,
in a scratch folder; the engine (mailsync.imapsync.folder.FolderSync) does the rest."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from mailsync.config import Account
from mailsync.folders import FolderPairing, ServerSide
from mailsync.imapsync.folder import FolderSync, SyncOptions
from mailsync.imapsync.placeholders import placeholder_header, placeholder_note
from mailsync.drivers.maildir import Maildir, file_name
from mailsync.results import FolderResult
from mailsync.reporting import SilentReporter
from mailsync.state import FolderRecord, State
from mailsync.imapsync.plan import LocalMsg, Pair, RemoteMsg
from tests.memory_remote import MemoryServer, crlf_size

FOLDER = "INBOX"
SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


def message(tag: str, size: int = 100) -> bytes:
    """A message whose size on the server (CRLF) is size, or as near as a header allows."""
    head = f"From: {tag}@example.org\nMessage-ID: <{tag}@example.org>\nX-Tag: {tag}\n\n".encode()
    pad = max(1, size - crlf_size(head) - 2)
    return head + b"x" * pad + b"\n"


def _placeholder(data: bytes) -> bytes:
    head = data.split(b"\n\n", 1)[0] + b"\n"
    return placeholder_header(head) + placeholder_note(crlf_size(data))


class EngineFolder:
    """One folder on both sides, as the arguments say, synced by the real engine."""

    def __init__(self, remote, local, last, mode: str = "sync", max_size: int = 0,
                 allow_mass_delete: bool = False) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mailsync-engine-", dir=SCRATCH))
        self.server = MemoryServer("/")
        folder = self.server.folder(FOLDER)
        bodies = {}
        for m in remote:
            bodies[m.uid] = message(f"u{m.uid}", m.size)
            folder.messages[m.uid] = [bodies[m.uid], set(m.flags)]
            folder.modseqs[m.uid] = folder.highestmodseq = folder.highestmodseq + 1
        folder.uidnext = max([m.uid for m in remote] + [p.uid or 0 for p in last], default=0) + 1
        self.maildir = Maildir(self.tmp / "Mail")
        self.maildir.create()
        paired = {p.key: p.uid for p in last if p.key is not None}
        for m in local:
            uid = paired.get(m.key)
            data = bodies.get(uid) or message(f"k{m.key}")
            if m.placeholder:
                data = _placeholder(data)
            flags = "".join(sorted(m.flags))
            sub, name = ("cur", file_name(m.key, flags)) if flags else ("new", m.key)
            (self.maildir.path / sub / name).write_bytes(data)
        self.account = Account(name="e", protocol="imap", host="memory.invalid", user="u",
                               port=993, tls="implicit", maildir=self.tmp / "Mail",
                               state_dir=self.tmp / "state", max_size=max_size,
                               max_delete=1.0)
        self.state = State(self.account.state_dir)
        if last:
            self.state.save_folder_record(FolderRecord(FOLDER, "", folder.uidvalidity,
                                                       folder.uidnext, None))
            self.state.put_pairs(FOLDER, last)
        self.options = SyncOptions(mode, allow_mass_delete=allow_mass_delete)

    def sync(self, dry_run: bool = False) -> list[str]:
        """One run of the engine; a dry run returns its plan in words."""
        result, lines = FolderResult(name=FOLDER), []
        pairing = FolderPairing(FOLDER, "", ServerSide(FOLDER, FOLDER, "/"), True)
        options = SyncOptions(self.options.mode, dry_run=dry_run,
                              allow_mass_delete=self.options.allow_mass_delete)
        FolderSync(self.server.session(), self.maildir, self.account, self.state,
                   SilentReporter(), options, pairing, result, lines).run()
        assert result.ok, result.error
        return lines

    def remote(self) -> list[RemoteMsg]:
        return [RemoteMsg(uid, frozenset(letters), crlf_size(body)) for uid, (body, letters)
                in sorted(self.server.folders[FOLDER].messages.items())]

    def local(self) -> list[LocalMsg]:
        out = []
        for key, entry in sorted(self.maildir.scan().items()):
            data = self.maildir.read(entry)
            out.append(LocalMsg(key, frozenset(entry.flags),
                                b"X-Mailsync-Placeholder" in data.split(b"\n\n", 1)[0]))
        return out

    def last(self) -> list[Pair]:
        return sorted(self.state.pairs(FOLDER), key=lambda p: (p.uid or 0, p.key or ""))

    def close(self) -> None:
        self.state.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def settle(remote, local, last, **policy):
    """The real engine syncs the folder once; a dry run after it plans nothing
    (idempotence). Returns the plan it ran, in words, and both sides and the pairs after."""
    folder = EngineFolder(remote, local, last, **policy)
    try:
        planned = folder.sync(dry_run=True)
        folder.sync()
        again = folder.sync(dry_run=True)
        assert again == [], again
        return planned, folder.remote(), folder.local(), folder.last()
    finally:
        folder.close()
