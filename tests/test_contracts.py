"""The driver contract for the server (mailsync.contracts.RemoteStore), one suite run
against the IMAP driver on a real Dovecot (stock, and one advertising neither UIDPLUS,
MOVE nor CONDSTORE) and against the in-memory server of the tests (the same two
capability sets), so the fake that the fast tests and the state machine use cannot drift
from the real thing.

Each backend gives the store under test and `other`, another client of the same
mailbox, which delivers, flags and expunges behind the store's back."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from mailsync.drivers import imap
from mailsync.contracts import CommandRefused, RemoteStore
from mailsync.errors import ProtocolError
from tests.corpus import make_message
from tests.imaphelp import Remote
from tests.memory_remote import MemoryServer, crlf_size
from tests.test_imap_adapter import account
from tests.test_servers import TRIMMED_CAPABILITIES

BACKENDS = ("memory", "memory-trimmed", "dovecot", "dovecot-trimmed")
A = b"From: a@example.org\nSubject: one\nMessage-ID: <one@example.org>\n\nfirst\nline\n"
B = b"From: b@example.org\nSubject: two\nMessage-ID: <two@example.org>\n\nsecond\n"
C = b"From: c@example.org\nSubject: three\n\nno message-id\n"


class MemoryOther:
    """Another client of a MemoryServer."""

    def __init__(self, server: MemoryServer) -> None:
        self.server = server

    def create(self, folder: str) -> None:
        self.server.folder(folder)

    def append(self, folder: str, body: bytes, letters: str = "") -> int:
        return self.server.folder(folder).add(body, letters)

    def set_flags(self, folder: str, uid: int, add: str = "", remove: str = "") -> None:
        f = self.server.folders[folder]
        before = set(f.messages[uid][1])
        f.messages[uid][1] = (before | set(add)) - set(remove)
        f.touch(uid)

    def expunge(self, folder: str, uid: int) -> None:
        self.server.folders[folder].expunge([uid])

    def messages(self, folder: str = "INBOX") -> dict[int, tuple[bytes, str]]:
        return {uid: (body, "".join(sorted(letters)))
                for uid, (body, letters) in self.server.folders[folder].messages.items()}

    def renumber(self, folder: str) -> None:
        self.server.reset_uidvalidity(folder)


class DovecotOther(Remote):
    """Another IMAP client of the Dovecot mailbox."""

    def expunge(self, folder: str, uid: int) -> None:
        self.c.select_folder(folder)
        self.c.add_flags([uid], [b"\\Deleted"])
        self.c.expunge()          # plain EXPUNGE: the trimmed server offers no UIDPLUS

    def renumber(self, folder: str) -> None:
        """A new UIDVALIDITY: the folder deleted and made again with the same mail."""
        kept = self.messages(folder)
        self.c.select_folder("INBOX")
        self.delete_folder(folder)
        self.create(folder)
        for uid in sorted(kept):
            self.append(folder, *kept[uid])


@dataclass
class Backend:
    name: str
    store: RemoteStore
    other: MemoryOther | DovecotOther
    uidplus: bool
    condstore: bool


@pytest.fixture(scope="module")
def trimmed_server():
    from tests.dovecot import private_dovecot
    with private_dovecot(extra_config=f"imap_capability = {TRIMMED_CAPABILITIES}\n") as server:
        yield server


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    name = request.param
    if name.startswith("memory"):
        full = name == "memory"
        server = MemoryServer("/", uidplus=full, move=full, condstore=full)
        server.folder("INBOX")
        server.folder("Archive")
        yield Backend(name, server.session(), MemoryOther(server), full, full)
        return
    dovecot = request.getfixturevalue("dovecot" if name == "dovecot" else "trimmed_server")
    user = dovecot.new_user()
    other = DovecotOther(dovecot, user)
    other.create("Archive")
    store = imap.connect(account(dovecot, user), dovecot.password)
    try:
        yield Backend(name, store, other, name == "dovecot", name == "dovecot")
    finally:
        store.logout()
        other.close()


def bodies(store: RemoteStore, uids, headers_only: bool = False) -> dict[int, bytes]:
    found: dict[int, io.BytesIO] = {}
    whole = store.fetch_bodies(uids, lambda uid: found.setdefault(uid, io.BytesIO()),
                               lambda uid, n: None, headers_only=headers_only)
    return {uid: found[uid].getvalue() for uid in whole}


# Select and status ------------------------------------------------------------------------

def test_select_counts_the_folder_and_uidnext_grows(backend):
    before = backend.store.select("INBOX")
    assert before.exists == 0 and before.uidvalidity > 0
    backend.other.append("INBOX", A)
    after = backend.store.select("INBOX")
    assert after.exists == 1 and after.uidnext > before.uidnext
    assert after.uidvalidity == before.uidvalidity
    assert (after.highestmodseq is not None) == backend.condstore


def test_a_missing_folder_is_refused_for_that_folder_only(backend):
    with pytest.raises(CommandRefused):
        backend.store.select("No Such Folder")
    assert not backend.store.broken
    assert backend.store.select("INBOX").exists == 0     # the connection goes on


def test_a_new_uidvalidity_shows_on_select(backend):
    backend.other.append("Archive", A)
    first = backend.store.select("Archive")
    backend.store.select("INBOX")
    backend.other.renumber("Archive")
    again = backend.store.select("Archive")
    assert again.uidvalidity != first.uidvalidity and again.exists == 1


def test_create_folder_makes_it_and_an_existing_one_is_fine(backend):
    backend.store.create_folder("Projects")
    backend.store.create_folder("Projects")
    assert backend.store.select("Projects").exists == 0


# Reading ----------------------------------------------------------------------------------

def test_fetch_meta_gives_flag_letters_crlf_sizes_and_message_ids(backend):
    a = backend.other.append("INBOX", A, "FS")
    c = backend.other.append("INBOX", C)
    backend.store.select("INBOX")
    metas = backend.store.fetch_meta(with_message_id=True)
    assert set(metas) == {a, c}
    assert metas[a].flags == frozenset("FS") and metas[c].flags == frozenset()
    assert metas[a].size == crlf_size(A)
    assert (metas[a].message_id, metas[c].message_id) == ("<one@example.org>", None)
    assert set(backend.store.fetch_meta([c])) == {c}
    assert backend.store.search_all() == {a, c}


def test_bodies_arrive_byte_identical_and_headers_first_is_the_header_block(backend):
    a = backend.other.append("INBOX", A)
    b = backend.other.append("INBOX", B)
    backend.store.select("INBOX")
    assert bodies(backend.store, [a, b]) == {a: A, b: B}
    assert bodies(backend.store, [a], headers_only=True) == {a: A.split(b"\n\n")[0] + b"\n\n"}


def test_a_message_expunged_by_another_client_is_absent_never_an_error(backend):
    """While the folder stays selected a server may go on showing the message (Dovecot
    does, until it may tell this session of the expunge); whatever it answers is whole
    and nothing fails. Once the session has seen the expunge, the message is absent."""
    a = backend.other.append("INBOX", A)
    b = backend.other.append("INBOX", B)
    backend.store.select("INBOX")
    backend.other.expunge("INBOX", a)          # while the store has the folder selected
    assert b in backend.store.fetch_meta([a, b])
    got = bodies(backend.store, [a, b])
    assert got[b] == B and got.get(a, A) == A
    backend.store.add_flags([a, b], "F")       # an expunged UID is ignored, not an error
    assert backend.other.messages()[b][1] == "F"
    backend.store.select("INBOX")
    assert set(backend.store.fetch_meta([a, b])) == {b}
    assert set(bodies(backend.store, [a, b])) == {b}
    assert backend.store.search_all() == {b}


def test_find_by_message_id_finds_exactly_that_message(backend):
    backend.other.append("INBOX", A)
    b = backend.other.append("INBOX", B)
    backend.store.select("INBOX")
    assert backend.store.find_by_message_id("<two@example.org>") == [b]
    assert backend.store.find_by_message_id("<two@example") == []
    assert backend.store.find_by_message_id("<none@example.org>") == []


def test_fetch_changed_gives_what_changed_since_a_modseq(backend):
    a = backend.other.append("INBOX", A)
    b = backend.other.append("INBOX", B)
    status = backend.store.select("INBOX")
    if not backend.condstore:      # refused for the folder: the engine looks at every message
        with pytest.raises((CommandRefused, ProtocolError)):
            backend.store.fetch_changed(1)
        assert not backend.store.broken
        return
    backend.other.set_flags("INBOX", b, add="S")
    backend.store.select("INBOX")
    changed = backend.store.fetch_changed(status.highestmodseq)
    assert set(changed) == {b} and changed[b].flags == frozenset("S")
    assert a not in changed


# Writing ----------------------------------------------------------------------------------

def test_append_stores_the_message_and_says_its_uid_with_uidplus(backend):
    """With UIDPLUS the new UID always; without, when the server says it anyway (Dovecot
    does), else None."""
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    uid = backend.store.append("Archive", A, "FS", when)
    assert uid is not None or not backend.uidplus
    stored = backend.other.messages("Archive")
    assert list(stored.values()) == [(A, "FS")]
    if uid is not None:
        assert set(stored) == {uid}


def test_append_to_a_missing_folder_is_refused_for_that_folder(backend):
    with pytest.raises(CommandRefused):
        backend.store.append("No Such Folder", A, "", None)
    assert not backend.store.broken


def test_flags_added_and_removed_reach_other_clients(backend):
    a = backend.other.append("INBOX", A, "S")
    b = backend.other.append("INBOX", B)
    backend.store.select("INBOX")
    backend.store.add_flags([a, b], "FR")
    backend.store.remove_flags([a], "S")
    assert {uid: fl for uid, (_, fl) in backend.other.messages().items()} == \
        {a: "FR", b: "FR"}


def test_marked_then_expunged_removes_exactly_ours(backend):
    a = backend.other.append("INBOX", A)
    b = backend.other.append("INBOX", B)
    backend.store.select("INBOX")
    backend.store.mark_deleted([a])
    assert backend.other.messages()[a][1] == "T"       # the first half shows: \Deleted
    assert backend.store.expunge_is_exact([a])
    assert backend.store.expunge_marked([a]) == set()
    assert set(backend.other.messages()) == {b}


def test_without_uidplus_a_message_another_client_marked_is_never_expunged(backend):
    a = backend.other.append("INBOX", A)
    b = backend.other.append("INBOX", B)
    backend.other.set_flags("INBOX", b, add="T")       # marked by someone else
    backend.store.select("INBOX")
    backend.store.mark_deleted([a])
    left = backend.store.expunge_marked([a])
    messages = backend.other.messages()
    assert b in messages                               # never someone else's
    if backend.uidplus:
        assert left == set() and a not in messages
    else:
        assert not backend.store.expunge_is_exact([a])
        assert left == {a} and messages[a][1] == "T"   # ours stays marked, and says so


def test_move_carries_the_message_and_its_flags(backend):
    a = backend.other.append("INBOX", A, "F")
    b = backend.other.append("INBOX", B)
    backend.store.select("INBOX")
    mapping = backend.store.move([a], "Archive")
    assert set(backend.other.messages()) == {b}
    moved = backend.other.messages("Archive")
    assert list(moved.values()) == [(A, "F")]
    assert mapping is None or mapping == {a: next(iter(moved))}
    assert mapping is not None or not backend.uidplus


def test_the_store_says_what_it_can(backend):
    assert backend.store.can_move == backend.uidplus   # the trimmed sets lack both
    assert backend.store.gmail is False and backend.store.broken is False



def test_changes_since_names_the_uids_expunged_since_or_says_it_cannot(backend):
    """QRESYNC's VANISHED where the server has it (stock Dovecot, the full in-memory
    server): of the candidates, exactly those expunged since the mod-sequence. Without
    it: None, and the engine lists every UID instead."""
    a = backend.other.append("INBOX", A)
    b = backend.other.append("INBOX", B)
    c = backend.other.append("INBOX", C)
    status = backend.store.select("INBOX")
    if not backend.condstore:
        with pytest.raises((CommandRefused, ProtocolError)):
            backend.store.changes_since(1, [a, b, c])
        return
    backend.other.expunge("INBOX", a)
    backend.other.set_flags("INBOX", b, add="F")
    backend.store.select("INBOX")
    changes = backend.store.changes_since(status.highestmodseq, [a, b, c, 99])
    assert set(changes.changed) == {b} and changes.changed[b].flags == frozenset("F")
    assert changes.vanished == frozenset({a})
