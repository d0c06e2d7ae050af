"""A first sync into a folder that already holds mail on both sides: pair by content.

A Maildir filled by mbsync, offlineimap, a restored backup, a copy from another machine
or another mailsync account holds the server's messages under names mailsync never
recorded. Taken for new, every message would be downloaded and uploaded once more,
doubling both sides. Instead, before the first plan of a folder with no pairs, each
server message is matched with the local file holding the same message:

1. a trace another tool left (a server UID it recorded for the file) is taken when the
   Message-ID and the size agree with that UID's: no header is fetched for it;
2. otherwise Message-ID, size and a digest of the header, unique on both sides;
3. where those are ambiguous (several messages alike in all three), a hash of the whole
   message, one to one in UID and key order: equal hashes are the same message;
4. a headers-first placeholder (state lost) by Message-ID and the full size it names.

Sizes are the server's count (RFC822.SIZE, CRLF line ends); a header line ``X-TUID:``
(mbsync adds one to messages it copies) is left out on both sides. Whatever does not
pair is a true leftover, transferred as new.

This module is pure: the engine gives it the fingerprints and callables that fetch
what a step needs (headers, whole messages), only for the messages still unpaired.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

__all__ = ["RemotePrint", "LocalPrint", "HeaderPrint", "comparable", "header_print",
           "body_hash", "server_size", "pair_by_content", "first_sync_refusal",
           "MASS_COPY_HINT", "unpaired_alike", "header_field", "fetched_print", "StoredMessages"]

MASS_COPY_HINT = "rerun with --allow-mass-copy if these are different messages"
GUARD_MIN_MESSAGES = 5   # below this on either side, copying all of it surprises nobody
UNRELATED_MIN_MESSAGES = 50   # this many unrelated messages on each side: the wrong Maildir?

_TUID_LINE = re.compile(rb"^X-TUID:[^\n]*\n(?:[ \t][^\n]*\n)*", re.I | re.M)


@dataclass(frozen=True)
class RemotePrint:
    """A server message as FETCH FLAGS RFC822.SIZE and the Message-ID show it."""

    uid: int
    message_id: str | None
    size: int


@dataclass(frozen=True)
class LocalPrint:
    """A local file. ``size`` is the server's count for it (see server_size); ``header``
    the digest of its header (None for a placeholder, whose header mailsync rewrote);
    ``hint`` a server UID another tool's traces give it (only a hint)."""

    key: str
    message_id: str | None
    size: int
    header: str | None
    hint: int | None = None

    @property
    def placeholder(self) -> bool:
        return self.header is None


@dataclass(frozen=True)
class HeaderPrint:
    """What the header of a server message adds: its size and digest with X-TUID left out."""

    size: int
    header: str


def comparable(message: bytes) -> bytes:
    """The message with LF line ends and no X-TUID header line, as both sides compare."""
    text = message.replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    head = _TUID_LINE.sub(b"", head + b"\n")[:-1]
    return head + sep + body


def server_size(message: bytes) -> int:
    """RFC822.SIZE of a message stored with LF: each line end counts two bytes."""
    return len(message) + message.count(b"\n") - message.count(b"\r\n")


def header_print(header: bytes, size: int) -> HeaderPrint:
    """A server message's HeaderPrint from its header (as fetched) and RFC822.SIZE."""
    kept = comparable(header)
    return HeaderPrint(size - (server_size(header) - server_size(kept)), _digest(kept))


def _digest(message: bytes) -> str:
    return hashlib.sha256(message.split(b"\n\n", 1)[0].rstrip(b"\n")).hexdigest()


def header_field(header: bytes | None, name: str) -> str | None:
    """The first value of header field `name` (unfolded, stripped), or None."""
    if not header:
        return None
    text = header.decode("utf-8", "replace").replace("\r\n", "\n")
    text = re.sub(r"\n[ \t]+", " ", text)
    for line in text.split("\n"):
        field, sep, value = line.partition(":")
        if sep and field.strip().lower() == name:
            return value.strip() or None
    return None


def body_hash(message: bytes) -> str:
    return hashlib.sha256(comparable(message)).hexdigest()


def local_print(key: str, data: bytes, message_id: str | None, hint: int | None = None,
                placeholder_size: int | None = None) -> LocalPrint:
    """A local file's print; a placeholder gives the full size its note names."""
    if placeholder_size is not None:
        return LocalPrint(key, message_id, placeholder_size, None, hint)
    kept = comparable(data)
    return LocalPrint(key, message_id, server_size(kept), _digest(kept), hint)


def pair_by_content(remote: Mapping[int, RemotePrint], local: Mapping[str, LocalPrint],
                    fetch_headers: Callable[[list[int]], Mapping[int, HeaderPrint]],
                    fetch_hashes: Callable[[list[int]], Mapping[int, str]],
                    local_hash: Callable[[str], str]) -> list[tuple[int, str]]:
    """(uid, key) of every server message and local file that hold the same message,
    one to one. The callables are asked only about messages still unpaired:
    fetch_headers(uids) and fetch_hashes(uids) for server messages (a uid missing from
    the answer is gone), local_hash(key) for files."""
    pairs = _by_trace(remote, local)
    left_r, left_l = dict(remote), dict(local)
    _drop_paired(pairs, left_r, left_l)
    if left_r and any(not lp.placeholder for lp in left_l.values()):
        heads = fetch_headers(sorted(left_r))
        unique, ambiguous = _by_header(left_r, heads, left_l)
        pairs += unique + _by_hash(ambiguous, fetch_hashes, local_hash)
        _drop_paired(pairs, left_r, left_l)
    if left_r and left_l:
        pairs += _placeholders(left_r, left_l)
    return sorted(pairs)


def _by_trace(remote: Mapping[int, RemotePrint],
              local: Mapping[str, LocalPrint]) -> list[tuple[int, str]]:
    pairs, used = [], set()
    for key, lp in sorted(local.items()):
        r = remote.get(lp.hint) if lp.hint is not None else None
        if (r is not None and r.uid not in used and lp.message_id is not None
                and r.message_id == lp.message_id and r.size == lp.size):
            pairs.append((r.uid, key))
            used.add(r.uid)
    return pairs


def _by_header(remote: Mapping[int, RemotePrint], heads: Mapping[int, HeaderPrint],
               local: Mapping[str, LocalPrint]):
    """Pairs unique by Message-ID, size and header digest; and the ambiguous groups
    (uids, keys) alike in all three."""
    groups: dict[tuple, tuple[list[int], list[str]]] = {}
    for uid in sorted(remote):
        if (h := heads.get(uid)) is not None:
            groups.setdefault((remote[uid].message_id, h.size, h.header), ([], []))[0].append(uid)
    for key in sorted(local):
        lp = local[key]
        if not lp.placeholder and (g := groups.get((lp.message_id, lp.size, lp.header))):
            g[1].append(key)
    # A Message-ID seen twice on a side may stand for different bodies with equal
    # headers and sizes (an edited copy): those are told apart by their whole content.
    repeated = _repeated_ids(remote.values()) | _repeated_ids(local.values())
    unique, ambiguous = [], []
    for (message_id, _, _), (uids, keys) in groups.items():
        if len(uids) == 1 and len(keys) == 1 and message_id not in repeated:
            unique.append((uids[0], keys[0]))
        elif uids and keys:
            ambiguous.append((uids, keys))
    return unique, ambiguous


def _repeated_ids(prints: Iterable[RemotePrint | LocalPrint]) -> set[str]:
    seen: set[str] = set()
    repeated = set()
    for p in prints:
        if p.message_id is not None:
            (repeated if p.message_id in seen else seen).add(p.message_id)
    return repeated


def _by_hash(groups: list[tuple[list[int], list[str]]],
             fetch_hashes: Callable[[list[int]], Mapping[int, str]],
             local_hash: Callable[[str], str]) -> list[tuple[int, str]]:
    if not groups:
        return []
    hashes = fetch_hashes(sorted(u for uids, _ in groups for u in uids))
    pairs = []
    for uids, keys in groups:
        waiting: dict[str, list[str]] = {}
        for key in keys:
            if digest := local_hash(key):          # "": the file is gone meanwhile
                waiting.setdefault(digest, []).append(key)
        for uid in uids:
            same = waiting.get(hashes.get(uid))    # None: gone from the server meanwhile
            if same:
                pairs.append((uid, same.pop(0)))
    return pairs


def _placeholders(remote: dict[int, RemotePrint],
                  local: dict[str, LocalPrint]) -> list[tuple[int, str]]:
    """A placeholder whose Message-ID and full size name exactly one server message."""
    by_print: dict[tuple, list[int]] = {}
    for uid, r in sorted(remote.items()):
        if r.message_id is not None:
            by_print.setdefault((r.message_id, r.size), []).append(uid)
    holders: dict[tuple, list[str]] = {}
    for key, lp in sorted(local.items()):
        if lp.placeholder and lp.message_id is not None:
            holders.setdefault((lp.message_id, lp.size), []).append(key)
    return [(by_print[p][0], keys[0]) for p, keys in holders.items()
            if len(keys) == 1 and len(by_print.get(p, ())) == 1]


def _drop_paired(pairs: Iterable[tuple[int, str]], remote: dict, local: dict) -> None:
    for uid, key in pairs:
        remote.pop(uid, None)
        local.pop(key, None)


def unpaired_alike(remote_ids: Mapping[int, str | None], local: Mapping[str, LocalPrint],
                   pairs: Iterable[tuple[int, str]]) -> int:
    """How many unpaired files carry a Message-ID that an unpaired server message carries
    too: the same messages, changed on one side (a sign the pairing found too little)."""
    pairs = list(pairs)
    paired_uids, paired_keys = {u for u, _ in pairs}, {k for _, k in pairs}
    ids = {mid for uid, mid in remote_ids.items() if uid not in paired_uids and mid}
    return sum(1 for key, lp in local.items()
               if key not in paired_keys and lp.message_id in ids)


def first_sync_refusal(server_count: int, local_count: int, paired: int,
                       downloads: int, uploads: int, alike: int) -> str | None:
    """Why a first sync of a folder full on both sides should wait for the user, or None.

    It waits when the pairing found under half of the smaller side and either most of
    what did not pair is the same mail changed (alike: Message-IDs on both sides; e.g.
    another tool rewrote the messages) or the smaller side is large (another mailbox's
    Maildir?). A few unrelated messages on one side (drafts a mail client saved) are
    simply copied."""
    smaller = min(server_count, local_count)
    if smaller < GUARD_MIN_MESSAGES or 2 * paired >= smaller or not downloads + uploads:
        return None
    changed = 2 * alike >= smaller - paired
    if not changed and smaller < UNRELATED_MIN_MESSAGES:
        return None
    why = (f"{alike} of the others have a Message-ID found on both sides but differ in "
           "content (changed by another tool?)" if changed else
           "the rest have nothing in common (another mailbox's Maildir?)")
    return (f"refused: a first sync with mail on both sides found only {paired} of the "
            f"{local_count} local and {server_count} server messages on both sides; {why}; "
            f"it would download {downloads} and upload {uploads}; {MASS_COPY_HINT}")


# POP3 -------------------------------------------------------------------------------------
# A Maildir filled by getmail, fetchmail or mpop holds the server's messages with header
# lines of the fetching tool's own on top (Delivered-To, Return-Path, Received), the body
# untouched. A message is known there by its Message-ID and a hash of its body; one
# without a Message-ID by its Date, From and Subject as well, so that two notices with
# one body are not taken for each other.


def fetched_print(message: bytes) -> tuple[str, str]:
    """(Message-ID or "", digest of the body, plus Date/From/Subject without an ID)."""
    text = message.replace(b"\r\n", b"\n")
    head, _, body = text.partition(b"\n\n")
    message_id = header_field(head, "message-id") or ""
    digest = hashlib.sha256(body)
    if not message_id:
        for name in ("date", "from", "subject"):
            digest.update(b"\0" + (header_field(head, name) or "").encode())
    return message_id, digest.hexdigest()


class StoredMessages:
    """The messages a Maildir already holds, by print; each answers for one server
    message (two copies on the server of a message stored once: the second is stored)."""

    def __init__(self, messages: Iterable[tuple[str, bytes]]) -> None:
        self._keys: dict[tuple[str, str], list[str]] = {}
        for key, message in messages:
            self._keys.setdefault(fetched_print(message), []).append(key)

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._keys.values())

    def take(self, message: bytes) -> str | None:
        """The key of a file holding this message (used up), or None."""
        keys = self._keys.get(fetched_print(message))
        return keys.pop(0) if keys else None
