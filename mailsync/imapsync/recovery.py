"""Settling what a crash left: the state's journal of intents, read before a folder is
planned, so that nothing is done twice and nothing is lost.

Every transfer is journalled before its IO: a download with the Maildir key chosen in
advance, an upload with a token that finds it on the server again (its Message-ID, or
its size and header digest). Flag changes are journalled too (the flags wanted on the
side changed): one whose IO ran but whose record was lost is recorded here if that side
shows it, so it is not taken for the user's own change there (which would undo a later
change on the other side)."""

from __future__ import annotations

import io
from typing import Iterable, Mapping

from mailsync import adoption
from mailsync.imapsync import moves
from mailsync.contracts import MANAGED, Entry, LocalFolder, RemoteStore
from mailsync.headers import parse_message_id, searchable
from mailsync.state import Intent, State
from mailsync.imapsync.plan import Pair


def settle_intents(remote: RemoteStore, local: LocalFolder, state: State, folder: str,
                   entries: Mapping[str, Entry]) -> None:
    """Complete or drop every intent of folder left by an interrupted run."""
    intents = state.intents(folder)
    for intent in intents:
        if intent.kind == "download":
            _settle_download(local, state, folder, entries, intent)
        elif intent.kind == "upload":
            uid = find_upload(remote, state, folder, intent.token)
            pairs = [Pair(uid, intent.key, intent.flags)] if uid is not None else []
            state.complete(folder, [intent], pairs)
    _settle_flags(remote, state, folder, entries,
                  [i for i in intents if i.kind in ("flags-remote", "flags-local")])


def _settle_download(local: LocalFolder, state: State, folder: str,
                     entries: Mapping[str, Entry], intent: Intent) -> None:
    if intent.key in entries:
        state.complete(folder, [intent], [Pair(intent.uid, intent.key, intent.flags,
                                               intent.placeholder)])
    else:
        local.discard_unfinished(intent.key)   # never published: maybe incomplete
        state.complete(folder, [intent], [])


def _settle_flags(remote: RemoteStore, state: State, folder: str,
                  entries: Mapping[str, Entry], intents: list[Intent]) -> None:
    """A flag change journalled but not recorded: record its pair if the side it
    changed shows the wanted flags (its IO ran), else drop it (the plan redoes it)."""
    if not intents:
        return
    uids = [i.uid for i in intents if i.kind == "flags-remote" and i.uid is not None]
    metas = remote.fetch_meta(uids) if uids else {}
    done = []
    for intent in intents:
        add, _, remove = (intent.token or "+-").partition("-")
        if intent.kind == "flags-remote":
            meta = metas.get(intent.uid)
            ran = (meta is not None and set(add[1:]) <= meta.flags
                   and not set(remove) & meta.flags)
        else:
            entry = entries.get(intent.key) if intent.key else None
            ran = entry is not None and (frozenset(c for c in entry.flags if c in MANAGED)
                                         == frozenset(add[1:]))
        if ran:
            done.append(Pair(intent.uid, intent.key, intent.flags, intent.placeholder))
    state.complete(folder, intents, done)


def flag_intent(folder: str, kind: str, pair: Pair, add: Iterable[str],
                remove: Iterable[str] = ()) -> Intent:
    """A flag change to journal: the pair to record once it ran, and as token
    "+ADD-REMOVE" (letters wanted present / absent on the side it changes; for the
    local side ADD is the whole set of letters the file gets)."""
    token = "+" + "".join(sorted(add)) + "-" + "".join(sorted(remove))
    return Intent(folder, kind, pair.uid, pair.key, pair.flags, pair.placeholder, token)


def find_upload(remote: RemoteStore, state: State, folder: str,
                token: str | None) -> int | None:
    """The UID of an upload whose reply was lost: the newest unpaired match."""
    found = unpaired_matches(remote, state, folder, token)
    return max(found) if found else None


def unpaired_matches(remote: RemoteStore, state: State, folder: str,
                     token: str | None) -> list[int]:
    """The UIDs of folder (the selected one) that no pair holds and that match an
    upload's token (see upload_token): where an upload whose UID went unrecorded may be."""
    if not token:
        return []
    paired = {p.uid for p in state.pairs(folder) if p.uid is not None}
    if token.startswith("size:"):
        size, _, digest = token[5:].partition(":")
        metas = remote.fetch_meta()
        found = [u for u, m in metas.items() if m.size == int(size) and u not in paired]
        if digest:   # (a token of an older version has the size alone)
            found = [u for u, d in header_digests(remote, found).items() if d == digest]
        return found
    return [u for u in remote.find_by_message_id(token) if u not in paired]


def upload_token(data: bytes) -> str:
    """How an upload whose UID went unrecorded is found again: its Message-ID where the
    server can search for it, else its size and header digest ("size:N:DIGEST")."""
    message_id = parse_message_id(data.split(b"\n\n", 1)[0])
    if searchable(message_id):
        return message_id
    return f"size:{adoption.server_size(data)}:{moves.header_digest(data)}"


def header_digests(remote: RemoteStore, uids: list[int]) -> dict[int, str]:
    """moves.header_digest of each of these messages of the selected folder that the
    server still has."""
    return {uid: moves.header_digest(header)
            for uid, header in fetch_whole(remote, uids, headers_only=True).items()}


def fetch_whole(remote: RemoteStore, uids: list[int],
                headers_only: bool = False) -> dict[int, bytes]:
    """These messages (or their headers) of the selected folder, in memory: only for
    the few a comparison needs, never for a transfer."""
    found: dict[int, io.BytesIO] = {}
    whole = remote.fetch_bodies(uids, lambda uid: found.setdefault(uid, io.BytesIO()),
                                lambda uid, n: None, headers_only=headers_only)
    return {uid: data.getvalue() for uid, data in found.items() if uid in whole}
