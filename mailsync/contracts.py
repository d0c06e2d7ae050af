"""The driver contracts: what the sync engine may ask of the server and of the Maildir.

The folder-sync engine (mailsync.imapsync.folder and its helpers) sees the mail server
only as a `RemoteStore` and a local folder only as a `LocalFolder`; it imports neither
the IMAP driver (mailsync.drivers.imap, over imapclient) nor the Maildir driver
(mailsync.drivers.maildir), and a test holds it to that. The values that cross the seam are
defined here too, so a driver and the engine agree on them without importing each other.

Failure scope. Every operation documents what it returns and how it fails. The scopes
are those of the exit-code contract (README, "Exit codes"):

- **message**: the operation leaves one message out and says so in its result (a UID
  absent from a FETCH answer was expunged meanwhile); the run goes on.
- **folder**: `CommandRefused` (the server answered NO: a folder missing, a quota, a
  read-only folder). The engine fails this folder (exit 1) and goes on with the others.
- **account**: any other `MailsyncError`: `TemporaryError` (a dropped link, a timeout,
  throttling: exit 75, retry later), `ProtocolError` (the server broke the protocol: 65),
  `LocalIOError` (the disk: 74), `Interrupted` (a signal). The account's run ends; what
  was recorded stays recorded, and the next run completes the rest.

Two implementations of each contract exist: the IMAP driver and an in-memory server
(tests/memory_remote.py) for RemoteStore, the Maildir driver for LocalFolder. One contract
suite (tests/test_contracts.py) runs against the IMAP driver on a real Dovecot and against
the in-memory server, so the fake cannot drift from the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Collection, Iterable, Mapping, Protocol

from mailsync.errors import EX_PARTIAL, MailsyncError

# Maildir flag letters the sync carries (D F P R S T); any other letter is the reader's.
MANAGED = "DFPRST"


class CommandRefused(MailsyncError):
    """The server answered NO (folder missing, quota, read-only): this folder fails."""

    exit_code = EX_PARTIAL


# Values on the server side ---------------------------------------------------------------

@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    exists: int
    highestmodseq: int | None = None     # None: no CONDSTORE, or NOMODSEQ


@dataclass(frozen=True)
class ServerFolder:
    name: str                    # UTF-8, decoded from modified UTF-7
    raw: str                     # the server's own (encoded) name, used on the wire
    delimiter: str | None
    flags: frozenset[str]        # e.g. "\\Noselect", "\\HasChildren", "\\Sent"
    selectable: bool
    name_ok: bool = True         # False: raw is not valid modified UTF-7; name == raw
    status: FolderStatus | None = None   # from LIST-STATUS, when asked and offered


@dataclass(frozen=True)
class Namespaces:
    """NAMESPACE (RFC 2342), names decoded: the personal namespace's prefix ("" or e.g.
    "INBOX.") and delimiter, and the prefixes of the other users' and shared namespaces
    (each with its delimiter). Without NAMESPACE: no prefix, nothing else."""

    personal: str = ""
    delimiter: str | None = None
    others: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class RemoteMeta:
    uid: int
    flags: frozenset[str]        # Maildir letters D F P R S T
    keywords: frozenset[str]     # every other flag, as the server spells it
    size: int                    # RFC822.SIZE (CRLF size on the server)
    internaldate: datetime | None    # aware, in the server's offset
    message_id: str | None = None    # only with with_message_id=True
    modseq: int | None = None        # with CONDSTORE
    gm_msgid: int | None = None      # Gmail (X-GM-EXT-1): the message's id in every label


@dataclass(frozen=True)
class Changes:
    """What changed in the selected folder since a mod-sequence (CONDSTORE/QRESYNC)."""

    changed: dict[int, RemoteMeta]        # flags changed, or arrived, since then
    vanished: frozenset[int] | None       # of the candidates asked about, those expunged
    #                                       since then; None: the server cannot say (no
    #                                       QRESYNC), every UID must be listed instead


# Values on the local side ----------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One message file of a local folder: its key (the unique part of its name), the
    subfolder it is in (new or cur), its whole file name and its flag letters."""

    key: str
    subdir: str
    filename: str
    flags: str

    @property
    def relpath(self) -> str:
        return f"{self.subdir}/{self.filename}"


# Streams ---------------------------------------------------------------------------------

class Sink(Protocol):
    """Where a message's bytes go as they arrive (a file in tmp/, a buffer, a pipe)."""

    def write(self, data: bytes) -> None: ...


class Receiving(Protocol):
    """What LocalFolder.deliver hands its writer: a sink per new message, and the word
    that a message is complete."""

    def open(self, key: str) -> Sink:
        """The sink for the message that will have this key. Account scope on failure."""

    def completed(self, key: str) -> None:
        """Every byte of key's message was written: it may be published."""


# The server --------------------------------------------------------------------------------

class RemoteStore(Protocol):
    """One connection to the mail server, with one folder selected at a time.

    Messages are addressed by UID within the selected folder. Flags are Maildir letters
    (MANAGED); the driver maps them to the server's flags. Message bytes are LF-ended on
    this side of the seam; sizes are the server's (CRLF) sizes."""

    gmail: bool          # Gmail's labels: a message may be in several folders
    can_move: bool       # MOVE: a message moves between folders with its UID changing
    broken: bool         # the connection is no longer usable (after an account failure)

    def select(self, folder: str, readonly: bool = False) -> FolderStatus:
        """Select folder. Folder scope: CommandRefused when it is missing or refused."""

    def create_folder(self, name: str) -> None:
        """Create folder name (an existing one is not an error). Folder scope."""

    def fetch_meta(self, uids: str | Iterable[int] = "1:*", with_message_id: bool = False,
                   with_date: bool = False) -> dict[int, RemoteMeta]:
        """Flags and sizes of these messages of the selected folder (every one by
        default), by UID. Message scope: a UID not answered is absent (expunged)."""

    def fetch_changed(self, since_modseq: int) -> dict[int, RemoteMeta]:
        """The messages whose flags changed (or that arrived) since since_modseq
        (CONDSTORE). Folder scope: CommandRefused or ProtocolError when the server
        refuses or garbles CHANGEDSINCE; the engine then looks at every message."""

    def changes_since(self, since_modseq: int, candidates: Collection[int]) -> Changes:
        """fetch_changed, and which of the candidate UIDs were expunged since (QRESYNC's
        VANISHED), so that the UIDs need not all be listed. Failure scope as
        fetch_changed. The engine trusts a vanished UID into no deletion unchecked."""

    def search_all(self) -> set[int]:
        """Every UID in the selected folder."""

    def fetch_bodies(self, uids: Iterable[int], sink_for: Callable[[int], Sink],
                     done: Callable[[int, int], None], headers_only: bool = False,
                     sizes: Mapping[int, int] | None = None) -> set[int]:
        """Stream each message (or its header block only) into sink_for(uid), then call
        done(uid, bytes written). Returns the UIDs delivered whole. Message scope: a UID
        expunged meanwhile is not delivered (its sink may exist, partly written: discard
        it). Account scope: a dropped link or garbage (ProtocolError) ends the call; the
        messages done before it are whole."""

    def find_by_message_id(self, message_id: str) -> list[int]:
        """The UIDs of the selected folder's messages with this Message-ID."""

    def append(self, folder: str, message: bytes, letters: Iterable[str],
               when: datetime | None) -> int | None:
        """Store message in folder with these flags; its UID (UIDPLUS), else None (the
        engine finds it by its Message-ID or size and header). Folder scope."""

    def add_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        """Add flags to these messages of the selected folder (expunged ones: ignored)."""

    def remove_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        """Remove flags from these messages (expunged ones: ignored)."""

    def mark_deleted(self, uids: Iterable[int]) -> None:
        """Set \\Deleted on these messages: the first half of an expunge, which a later
        run, seeing the mark, takes as the deletion it was."""

    def expunge_marked(self, uids: Iterable[int]) -> set[int]:
        """Expunge these marked messages and no other. Returns the UIDs left marked:
        without UIDPLUS, when other messages are marked too, none is expunged."""

    def expunge_is_exact(self, uids: Iterable[int]) -> bool:
        """Whether expunge_marked(uids) would expunge exactly these (UIDPLUS, or no other
        message of the selected folder is marked)."""

    def move(self, uids: Iterable[int], dest: str) -> dict[int, int] | None:
        """Move these messages of the selected folder to dest: old UID -> new UID when
        the server says (UIDPLUS), else None. Folder scope."""


# The Maildir -------------------------------------------------------------------------------

class LocalFolder(Protocol):
    """One local folder of mail. Writes are durable when they return: a new message is
    written, fsynced and renamed into place, and the folder's directories are fsynced,
    before deliver returns; set_flags and remove are made durable by settle()."""

    def exists(self) -> bool: ...

    def create(self) -> None:
        """Make the folder, private to the user. Account scope (LocalIOError)."""

    def stamp(self) -> str | None:
        """A token that changes whenever a message is added, removed or renamed; None
        when the folder changed too recently for the next change to be sure to show."""

    def scan(self) -> dict[str, Entry]:
        """Every message, by key."""

    def relpaths(self) -> set[str]:
        """Where every message is now, without parsing the names (cheap to compare)."""

    def locate(self, key: str, seen: Entry | None = None) -> Entry | None:
        """Where key's message is now (seen: where it was last seen), None when gone:
        a mail client may rename or delete a file at any time."""

    def read(self, entry: Entry) -> bytes:
        """The message's bytes. FileNotFoundError when it went meanwhile."""

    def read_head(self, entry: Entry, limit: int = 65536) -> bytes:
        """The start of the message: enough for its header."""

    def received(self, entry: Entry) -> datetime | None:
        """When the message arrived here (its file's time), for the server's copy."""

    def new_key(self) -> str:
        """A key no message has, chosen before writing, so a crash can be settled."""

    def deliver(self, flags: Mapping[str, str],
                write: Callable[[Receiving], None]) -> dict[str, Entry]:
        """Receive new messages in one durable step. flags: each new key -> its flag
        letters. write(receiving) writes each message into receiving.open(key) and calls
        receiving.completed(key) when it is whole. Then every completed message is made
        durable and published under its key with its flags, in one step, and the entries
        returned; what was not completed is removed. If write raises, nothing is
        published, every file it began is removed, and the error goes on."""

    def replace_content(self, key: str, write: Callable[[Receiving], None]) -> Entry | None:
        """Replace key's message by the one write writes (under the key it is given),
        keeping the file's name and flags: one atomic rename, durable on return. None when
        key's message is gone meanwhile or write did not complete it (nothing changed)."""

    def discard_unfinished(self, key: str) -> None:
        """Remove what a delivery of key that never published left."""

    def set_flags(self, entry: Entry, letters: Iterable[str]) -> Entry:
        """Give the message exactly these MANAGED letters (a reader's other letters stay);
        its entry after. Durable after settle()."""

    def remove(self, entry: Entry) -> None:
        """Delete the message (gone already: fine). Durable after settle()."""

    def settle(self) -> None:
        """Make the renames and removals done so far durable."""

    def peer_uids(self, keys: Collection[str], uidvalidity: int) -> dict[str, int]:
        """Server UIDs that another tool (mbsync, offlineimap, Dovecot) recorded for these
        files, when it synced the same folder with this UIDVALIDITY: hints for a first
        sync into a full folder, never trusted alone."""
