"""Which local moves between folders can be done on the server with UID MOVE.

A message the user moved from folder A to folder B shows up as a synced message gone
from A's Maildir and a new, unpaired file in B's. Synced folder by folder, that is an
upload to B and an expunge from A: the whole message travels again. When the new file
is certainly the message that left A, the server can move it instead.

"Certainly" means: the server copy in A and the new file in B have the same size
(RFC822.SIZE against the file's size with CRLF line endings) and the same header
(compared by digest, line endings aside), and either the same Maildir key (moved by
renaming the file) or the same Message-ID; the new file has a Message-ID the server can
search for (by which a crash is settled; the caller leaves out any other); and the match
is one to one. Anything less sure is left to the upload-and-expunge path, which is always
correct.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Gone:
    """A synced message no longer in its folder's Maildir; still on the server."""

    folder: str
    uid: int
    key: str
    flags: frozenset[str]
    size: int                  # RFC822.SIZE on the server
    message_id: str | None
    header: str | None = None  # digest of the header (header_digest)


@dataclass(frozen=True)
class Arrival:
    """A file in a folder's Maildir that no pair knows."""

    folder: str
    key: str
    size: int                  # as the server would count it (CRLF)
    message_id: str | None
    header: str | None = None


@dataclass(frozen=True)
class Move:
    gone: Gone
    arrival: Arrival


def match_moves(gone: list[Gone], arrivals: list[Arrival]) -> list[Move]:
    """The one-to-one, same-size matches between messages gone from one folder and
    files arrived in another, by Maildir key first, then by Message-ID."""
    moves: list[Move] = []
    used_gone: set[tuple[str, int]] = set()
    used_arrival: set[tuple[str, str]] = set()
    for identity in (_by_key, _by_message_id):
        for g, a in _unique_matches(gone, arrivals, identity):
            if (g.folder, g.uid) in used_gone or (a.folder, a.key) in used_arrival:
                continue
            if g.folder == a.folder or g.size != a.size or not a.message_id:
                continue
            if g.message_id != a.message_id or g.header is None or g.header != a.header:
                continue
            used_gone.add((g.folder, g.uid))
            used_arrival.add((a.folder, a.key))
            moves.append(Move(g, a))
    return moves


def header_digest(message: bytes) -> str:
    """A digest of a message's header (up to the first empty line), LF line endings."""
    text = message.replace(b"\r\n", b"\n")
    return hashlib.sha256(text.split(b"\n\n", 1)[0]).hexdigest()


def _by_key(item: Gone | Arrival) -> str | None:
    return item.key


def _by_message_id(item: Gone | Arrival) -> str | None:
    return item.message_id


def _unique_matches(gone: list[Gone], arrivals: list[Arrival], identity):
    """Pairs whose identity occurs exactly once among the gone and once among arrivals."""
    gone_by: dict[str, list[Gone]] = {}
    for g in gone:
        if (ident := identity(g)) is not None:
            gone_by.setdefault(ident, []).append(g)
    arrived_by: dict[str, list[Arrival]] = {}
    for a in arrivals:
        if (ident := identity(a)) is not None:
            arrived_by.setdefault(ident, []).append(a)
    for ident, gs in gone_by.items():
        arr = arrived_by.get(ident, [])
        if len(gs) == 1 and len(arr) == 1:
            yield gs[0], arr[0]
