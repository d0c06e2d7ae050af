"""The IMAP adapter against a real Dovecot (and a tiny scripted fake for odd servers)."""

from __future__ import annotations

import os

import base64
import io
import socket
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from mailsync.drivers import imap
from mailsync.config import Account
from mailsync.errors import (AuthError, CertificateError, MailsyncError, ProtocolError,
                             TemporaryError, UnreachableError)
from mailsync.drivers.imap import (CommandRefused, MissingCapability, RemoteMeta, crlf_to_lf,
                           flags_to_letters, letters_to_flags, lf_to_crlf, parse_message_id,
                           redact, uid_sets)
from tests.corpus import make_corpus, make_message
from tests.proxy import CutProxy


# Helpers ------------------------------------------------------------------------------

def account(dc, user: str, tmp: Path = Path("/nonexistent"), **kw) -> Account:
    base = Account(name="t", protocol="imap", host=dc.host, user=user, port=dc.imaps_port,
                   tls="implicit", maildir=tmp / "mail", state_dir=tmp / "state",
                   ca_file=Path(dc.ca_file), timeout=10.0)
    return replace(base, **kw)


@pytest.fixture
def user(dovecot):
    return dovecot.new_user()


@pytest.fixture
def session(dovecot, user):
    s = imap.connect(account(dovecot, user), dovecot.password)
    yield s
    s.logout()


class Collect:
    """sink_for/done pair that keeps every message in memory."""

    def __init__(self):
        self.buffers: dict[int, io.BytesIO] = {}
        self.done: list[tuple[int, int]] = []

    def sink_for(self, uid):
        self.buffers[uid] = io.BytesIO()
        return self.buffers[uid]

    def finished(self, uid, nbytes):
        self.done.append((uid, nbytes))

    def bodies(self) -> dict[int, bytes]:
        return {uid: buf.getvalue() for uid, buf in self.buffers.items()}


def msg(i: int, extra: str = "") -> bytes:
    return (f"From: a@example.org\nSubject: test {i}\nMessage-ID: <{i}.{extra}@t>\n\n"
            f"body {i}\n.\nend\n").encode()


# Connecting ---------------------------------------------------------------------------

def test_connect_implicit_tls(dovecot, user):
    s = imap.connect(account(dovecot, user), dovecot.password)
    try:
        assert {"IMAP4REV1", "UIDPLUS", "MOVE", "CONDSTORE"} <= s.capabilities
        assert s.delimiter == dovecot.separator
        assert s.condstore
        assert dovecot.password not in repr(s)
    finally:
        s.logout()


def test_connect_starttls_and_plain_auth(dovecot, user):
    acc = account(dovecot, user, port=dovecot.imap_port, tls="starttls", auth="plain")
    s = imap.connect(acc, dovecot.password)
    try:
        assert s.select("INBOX").exists == 0
    finally:
        s.logout()


def test_non_ascii_password_goes_over_authenticate_plain(dovecot, user):
    # Dovecot's static passdb has one password, so a wrong non-ASCII one must be
    # refused as a login failure (not crash in imaplib's ASCII encoding).
    lines = []
    with pytest.raises(AuthError) as err:
        imap.connect(account(dovecot, user), "pässwörd", trace=lambda d, ln: lines.append(ln))
    assert "pässwörd" not in str(err.value)
    assert any("AUTHENTICATE <redacted>" in ln for ln in lines)


def test_wrong_password(dovecot, user):
    with pytest.raises(AuthError) as err:
        imap.connect(account(dovecot, user), "wrong-secret-xyz")
    assert err.value.exit_code == 77
    assert not isinstance(err.value, CertificateError)
    assert "wrong-secret-xyz" not in str(err.value)
    assert "wrong-secret-xyz" not in repr(err.value.args)


def test_unsupported_oauth_mechanism_is_an_auth_error(dovecot, user):
    with pytest.raises(AuthError):
        imap.connect(account(dovecot, user, auth="xoauth2"), "token-abc")


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_untrusted_certificate(dovecot, user, tls):
    port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
    with pytest.raises(CertificateError) as err:
        imap.connect(account(dovecot, user, ca_file=None, port=port, tls=tls),
                     dovecot.password)
    assert err.value.exit_code == 77


def test_wrong_ca(dovecot, user):
    with pytest.raises(CertificateError):
        imap.connect(account(dovecot, user, ca_file=Path(dovecot.untrusted_ca_file)),
                     dovecot.password)


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_host_name_mismatch(dovecot, user, tls):
    if dovecot.mismatch_host is None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("127.0.0.2 is needed for the host-name mismatch test under CI")
        pytest.skip("127.0.0.2 not bindable here")
    port = dovecot.imaps_port if tls == "implicit" else dovecot.imap_port
    with pytest.raises(CertificateError) as err:
        imap.connect(account(dovecot, user, host=dovecot.mismatch_host, port=port, tls=tls),
                     dovecot.password)
    assert "mismatch" in str(err.value).lower() or "match" in str(err.value).lower()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_closed_port(dovecot, user):
    with pytest.raises(UnreachableError) as err:
        imap.connect(account(dovecot, user, port=closed_port()), dovecot.password)
    assert err.value.exit_code == 69


def test_tls_to_a_plain_port_is_not_a_crash(dovecot, user):
    with pytest.raises(MailsyncError) as err:
        imap.connect(account(dovecot, user, port=dovecot.imap_port, tls="implicit", timeout=3),
                     dovecot.password)
    # The server's plain-text greeting is recognised: the setting to change is named.
    assert err.value.exit_code == 78 and 'tls = "starttls"' in str(err.value)


def test_greeting_timeout(dovecot, user):
    with CutProxy(dovecot.host, dovecot.imaps_port, stall=True) as px:
        acc = account(dovecot, user, host=px.host, port=px.port, timeout=0.5)
        with pytest.raises(TemporaryError) as err:
            imap.connect(acc, dovecot.password)
    assert err.value.exit_code == 75


def test_connection_cut_mid_fetch_is_temporary(dovecot, user):
    big = make_message(0, size=400_000)
    dovecot.seed(user, [big])
    with CutProxy(dovecot.host, dovecot.imaps_port, cut_after_bytes=60_000) as px:
        s = imap.connect(account(dovecot, user, host="localhost", port=px.port),
                         dovecot.password)
        s.select("INBOX")
        got = Collect()
        with pytest.raises(TemporaryError):
            s.fetch_bodies([1], got.sink_for, got.finished)
        assert got.done == []
        with pytest.raises(TemporaryError):      # the session knows it is gone
            s.fetch_meta()
        s.logout()


def test_stall_mid_fetch_times_out(dovecot, user):
    dovecot.seed(user, [make_message(0, size=400_000)])
    with CutProxy(dovecot.host, dovecot.imaps_port, cut_after_bytes=60_000, stall=True) as px:
        s = imap.connect(account(dovecot, user, host="localhost", port=px.port, timeout=1),
                         dovecot.password)
        s.select("INBOX")
        got = Collect()
        with pytest.raises(TemporaryError):
            s.fetch_bodies([1], got.sink_for, got.finished)
        s.abort()


# A scripted fake server for what Dovecot will not do -----------------------------------

class FakeServer:
    """Accept one connection, send greeting, answer each command from a table.

    answers maps a command word (LOGIN, SELECT, UID...) to lines; "{tag}" is replaced
    by the command's tag; None closes the connection."""

    def __init__(self, greeting: str, answers: dict[str, list[str] | None]):
        self.greeting, self.answers = greeting, answers
        self.received: list[str] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as rfile:
            conn.sendall(self.greeting.encode() + b"\r\n")
            for line in rfile:
                text = line.decode().rstrip("\r\n")
                self.received.append(text)
                tag, _, rest = text.partition(" ")
                word = rest.split(" ", 1)[0].upper()
                if word == "UID":
                    word = "UID " + rest.split(" ")[1].upper()
                default = ["{tag} OK done"] if word != "LOGOUT" else ["* BYE", "{tag} OK bye"]
                lines = self.answers.get(word, default)
                if lines is None:
                    return
                conn.sendall("".join(ln.replace("{tag}", tag) + "\r\n" for ln in lines)
                             .encode())

    def close(self):
        self.listener.close()
        self.thread.join(5)


def fake_account(dc, port: int) -> Account:
    return account(dc, "someone", port=port, tls="none", allow_plaintext=True, timeout=5)


CAPS = "* CAPABILITY IMAP4rev1 AUTH=PLAIN"
LOGGED_IN = {
    "CAPABILITY": [CAPS, "{tag} OK done"],
    "LOGIN": ["{tag} OK [CAPABILITY IMAP4rev1 UIDPLUS] logged in"],
    "LIST": ['* LIST (\\Noselect) "/" ""', "{tag} OK done"],
    "SELECT": ["* 1 EXISTS", "* OK [UIDVALIDITY 7] v", "* OK [UIDNEXT 5] n",
               "{tag} OK [READ-WRITE] done"],
}


def test_starttls_not_offered_never_falls_back(dovecot):
    fake = FakeServer("* OK fake", {"CAPABILITY": [CAPS, "{tag} OK done"]})
    try:
        acc = replace(fake_account(dovecot, fake.port), tls="starttls")
        with pytest.raises(UnreachableError) as err:
            imap.connect(acc, "pw-secret")
        assert "STARTTLS" in str(err.value)
    finally:
        fake.close()
    assert not any("LOGIN" in line for line in fake.received)


def test_garbage_greeting_is_a_protocol_error(dovecot):
    fake = FakeServer("HTTP/1.1 400 Bad Request", {})
    try:
        with pytest.raises(ProtocolError) as err:
            imap.connect(fake_account(dovecot, fake.port), "pw-secret")
        assert err.value.exit_code == 65
    finally:
        fake.close()


def test_bye_greeting_is_temporary(dovecot):
    fake = FakeServer("* BYE too many connections", {})
    try:
        with pytest.raises(TemporaryError):
            imap.connect(fake_account(dovecot, fake.port), "pw-secret")
    finally:
        fake.close()


@pytest.mark.parametrize("code", ["UNAVAILABLE", "INUSE", "LIMIT"])
def test_login_refused_temporarily(dovecot, code):
    fake = FakeServer("* OK fake", {"CAPABILITY": [CAPS, "{tag} OK done"],
                                    "LOGIN": [f"{{tag}} NO [{code}] try later"]})
    try:
        with pytest.raises(TemporaryError) as err:
            imap.connect(fake_account(dovecot, fake.port), "pw-secret")
        assert err.value.exit_code == 75
        assert "pw-secret" not in str(err.value)
    finally:
        fake.close()


def test_connection_closed_during_login_is_temporary(dovecot):
    fake = FakeServer("* OK fake", {"CAPABILITY": [CAPS, "{tag} OK done"], "LOGIN": None})
    try:
        with pytest.raises(TemporaryError):
            imap.connect(fake_account(dovecot, fake.port), "pw-secret")
    finally:
        fake.close()


@pytest.mark.parametrize("fetch_line", [
    "* 1 FETCH (UID 4 FLAGS \\Seen RFC822.SIZE 10 INTERNALDATE NIL)",    # FLAGS not a list
    "* 1 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE abc INTERNALDATE NIL)",  # size not a number
    "* 1 FETCH (UID 4 FLAGS (\\Seen)",                                    # unbalanced
    "* 1 FETCH (UID 4 FLAGS (\\Seen) INTERNALDATE NIL)",                  # size missing
])
def test_malformed_fetch_is_a_protocol_error(dovecot, fetch_line):
    answers = dict(LOGGED_IN)
    answers["UID FETCH"] = [fetch_line, "{tag} OK done"]
    fake = FakeServer("* OK fake", answers)
    try:
        s = imap.connect(fake_account(dovecot, fake.port), "pw-secret")
        assert not s.condstore and "UIDPLUS" in s.capabilities
        assert s.select("INBOX") == imap.FolderStatus(7, 5, 1, None)
        with pytest.raises(ProtocolError):
            s.fetch_meta()
        s.abort()
    finally:
        fake.close()


def test_unsolicited_and_unasked_fetch_answers_are_ignored(dovecot):
    answers = dict(LOGGED_IN)
    answers["UID FETCH"] = [
        "* 2 FETCH (FLAGS (\\Deleted))",                                   # no UID
        "* 3 FETCH (UID 9 FLAGS (\\Seen) RFC822.SIZE 3 INTERNALDATE NIL)",  # not asked
        "* 1 FETCH (UID 4 FLAGS (\\Seen $Label1) RFC822.SIZE 10 "
        'INTERNALDATE "01-Jan-2024 10:00:00 +0100")',
        "{tag} OK done"]
    fake = FakeServer("* OK fake", answers)
    try:
        s = imap.connect(fake_account(dovecot, fake.port), "pw-secret")
        s.select("INBOX")
        meta = s.fetch_meta([4, 5])
        assert meta == {4: RemoteMeta(4, frozenset("S"), frozenset({"$Label1"}), 10,
                                      datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc))}
        s.abort()
    finally:
        fake.close()


def test_connection_dropped_mid_session_is_temporary(dovecot):
    answers = dict(LOGGED_IN)
    answers["UID FETCH"] = None
    fake = FakeServer("* OK fake", answers)
    try:
        s = imap.connect(fake_account(dovecot, fake.port), "pw-secret")
        s.select("INBOX")
        with pytest.raises(TemporaryError):
            s.fetch_meta()
        s.abort()
    finally:
        fake.close()


@pytest.mark.parametrize("marked, left", [("1", set()), ("1 3", {1})])
def test_expunge_without_uidplus_expunges_only_what_it_marked(dovecot, marked, left):
    """No UIDPLUS: a plain EXPUNGE only when no other message is marked \\Deleted (UID
    SEARCH DELETED finds ours alone); else ours stay marked and are returned."""
    answers = dict(LOGGED_IN)
    answers["LOGIN"] = ["{tag} OK [CAPABILITY IMAP4rev1] logged in"]
    answers["UID STORE"] = ["{tag} OK stored"]
    answers["UID SEARCH"] = [f"* SEARCH {marked}", "{tag} OK searched"]
    answers["EXPUNGE"] = ["* 1 EXPUNGE", "{tag} OK expunged"]
    fake = FakeServer("* OK fake", answers)
    try:
        s = imap.connect(fake_account(dovecot, fake.port), "pw-secret")
        s.select("INBOX")
        assert s.expunge([1]) == left
        s.abort()
    finally:
        fake.close()
    sent = [line.split(" ", 1)[1] for line in fake.received if " " in line]
    assert any(line.startswith("UID STORE 1 +FLAGS.SILENT (\\Deleted)") for line in sent)
    assert ("EXPUNGE" in sent) == (not left)
    assert not any(line.startswith("UID EXPUNGE") for line in sent)


# Folders ------------------------------------------------------------------------------

def test_list_folders_nested_and_non_ascii(session, dovecot, user):
    session.create_folder("Entwürfe")
    session.create_folder("a/b")
    session.create_folder("a/b")             # already there: fine
    session.create_folder("日本語/Ünter")
    folders = {f.name: f for f in session.list_folders()}
    assert {"INBOX", "Entwürfe", "a", "a/b", "日本語", "日本語/Ünter"} <= set(folders)
    assert folders["Entwürfe"].raw == "Entw&APw-rfe"
    assert folders["a/b"].delimiter == "/"
    assert folders["a/b"].selectable and folders["INBOX"].selectable
    assert all(f.name_ok for f in folders.values())
    assert ".Entw&APw-rfe" in dovecot.server_folders(user)
    st = session.select(folders["Entwürfe"])
    assert st.exists == 0 and st.uidnext == 1
    assert session.status("日本語/Ünter").exists == 0
    # The same list with every selectable folder's STATUS in the one LIST (LIST-STATUS);
    # extended LIST says \NonExistent where plain LIST says \Noselect.
    listed = {f.name: f for f in session.list_folders(with_status=True)}
    same = lambda f: (f.raw, f.delimiter, f.selectable, f.name_ok)   # noqa: E731
    assert {n: same(f) for n, f in listed.items()} == {n: same(f) for n, f in folders.items()}
    for name, f in listed.items():
        want = session.status(f) if f.selectable else None
        assert f.status == want, name


def test_special_use_flags(session):
    session.create_folder("Sent")
    sent = next(f for f in session.list_folders() if f.name == "Sent")
    assert "\\Sent" in sent.flags


def test_select_missing_folder_is_refused(session):
    with pytest.raises(CommandRefused) as err:
        session.select("Nope")
    assert err.value.exit_code == 1
    session.select("INBOX")                  # the session goes on


def test_select_and_status(session, dovecot, user):
    dovecot.seed(user, [msg(1), msg(2)])
    st = session.select("INBOX")
    assert st.exists == 2 and st.uidnext == 3 and st.uidvalidity > 0
    assert isinstance(st.highestmodseq, int)
    st2 = session.status("INBOX")
    assert (st2.uidvalidity, st2.uidnext, st2.exists) == (st.uidvalidity, 3, 2)
    ro = session.select("INBOX", readonly=True)
    assert ro.uidvalidity == st.uidvalidity


# Metadata -----------------------------------------------------------------------------

def test_fetch_meta_flags_sizes_dates(session, dovecot, user):
    bodies = [msg(1), msg(2), msg(3)]
    dovecot.seed(user, bodies[:2])
    dovecot.seed(user, bodies[2:], flags="SFR")
    session.select("INBOX")
    session.add_flags([2], "P")
    session._client.add_flags([2], [b"$Label1"])
    meta = session.fetch_meta(with_message_id=True, with_date=True)
    assert sorted(meta) == [1, 2, 3]
    assert meta[1].flags == frozenset() and meta[1].keywords == frozenset()
    assert meta[2].flags == frozenset("P") and meta[2].keywords == {"$Label1"}
    assert meta[3].flags == frozenset("SFR")
    for uid, body in zip((1, 2, 3), bodies):
        assert meta[uid].size == len(lf_to_crlf(body))
        assert meta[uid].message_id == f"<{uid}.@t>"
        assert meta[uid].internaldate.tzinfo is not None
        assert isinstance(meta[uid].modseq, int)
    assert session.fetch_meta()[1].message_id is None


def test_fetch_meta_subsets_and_ranges(session, dovecot, user):
    dovecot.seed(user, [msg(i) for i in range(5)])
    session.select("INBOX")
    assert sorted(session.fetch_meta([2, 4, 99])) == [2, 4]
    assert sorted(session.fetch_meta("3:*")) == [3, 4, 5]
    assert session.fetch_meta("10:*") == {}          # not the RFC's "last message"
    assert session.fetch_meta([]) == {}


def test_fetch_meta_empty_folder(session):
    session.select("INBOX")
    assert session.fetch_meta() == {}


def test_fetch_meta_batches_long_uid_lists(session, dovecot, user, monkeypatch):
    dovecot.seed(user, [msg(i) for i in range(30)])
    session.select("INBOX")
    monkeypatch.setattr(imap.parse, "MAX_SET_CHARS", 6)
    odd = list(range(1, 31, 2))
    assert sorted(session.fetch_meta(odd)) == odd


def test_fetch_changed(session, dovecot, user):
    dovecot.seed(user, [msg(1), msg(2), msg(3)])
    st = session.select("INBOX")
    session.add_flags([2], "S")
    changed = session.fetch_changed(st.highestmodseq)
    assert sorted(changed) == [2] and changed[2].flags == frozenset("S")
    assert changed[2].modseq > st.highestmodseq


def test_find_by_message_id(session, dovecot, user):
    dovecot.seed(user, [msg(1, "x"), msg(2, "x"), msg(11, "x")])
    session.select("INBOX")
    assert session.find_by_message_id("<1.x@t>") == [1]
    assert session.find_by_message_id("<11.x@t>") == [3]
    assert session.find_by_message_id("<nothere@t>") == []
    assert session.find_by_message_id("") == []


# Bodies -------------------------------------------------------------------------------

def test_fetch_bodies_identical_and_not_seen(session, dovecot, user, monkeypatch):
    corpus = make_corpus(12)
    dovecot.seed(user, corpus)
    session.select("INBOX")
    monkeypatch.setattr(imap.session, "BODY_BATCH_COUNT", 5)
    got = Collect()
    delivered = session.fetch_bodies(range(1, 13), got.sink_for, got.finished)
    assert delivered == set(range(1, 13))
    assert got.bodies() == {i + 1: body for i, body in enumerate(corpus)}
    assert [uid for uid, _ in got.done] == list(range(1, 13))
    assert all(n == len(corpus[uid - 1]) for uid, n in got.done)
    meta = session.fetch_meta()
    assert all("S" not in m.flags for m in meta.values())
    assert all(fl == "" for _n, fl, _d in dovecot.server_entries(user))


def test_fetch_bodies_batches_by_size(session, dovecot, user, monkeypatch):
    corpus = [make_message(i, size=30_000) for i in range(6)]
    dovecot.seed(user, corpus)
    session.select("INBOX")
    monkeypatch.setattr(imap.session, "BODY_BATCH_BYTES", 70_000)
    sent = []
    real = session._uid_fetch
    monkeypatch.setattr(session, "_uid_fetch",
                        lambda uidset, items, *a: (sent.append(uidset), real(uidset, items, *a))[1])
    streamed = session._stream_bodies
    monkeypatch.setattr(session, "_stream_bodies",
                        lambda uidset, *a: (sent.append(uidset), streamed(uidset, *a))[1])
    got = Collect()
    sizes = {m.uid: m.size for m in session.fetch_meta().values()}
    sent.clear()
    session.fetch_bodies([1, 2, 3, 4, 5, 6], got.sink_for, got.finished, sizes=sizes)
    assert sent == ["1:2", "3:4", "5:6"]
    assert got.bodies() == {i + 1: b for i, b in enumerate(corpus)}
    sent.clear()
    session.fetch_bodies([1, 2], got.sink_for, got.finished)      # sizes asked for first
    assert sent == ["1:2", "1:2"]


def test_fetch_bodies_skips_expunged_and_headers_only(session, dovecot, user):
    bodies = [msg(1), msg(2), msg(3)]
    dovecot.seed(user, bodies)
    session.select("INBOX")
    session.expunge([2])
    got = Collect()
    assert session.fetch_bodies([1, 2, 3], got.sink_for, got.finished) == {1, 3}
    assert sorted(got.bodies()) == [1, 3]
    heads = Collect()
    assert session.fetch_bodies([3], heads.sink_for, heads.finished, headers_only=True) == {3}
    assert heads.bodies()[3] == bodies[2].split(b"\n\n")[0] + b"\n\n"
    assert session.fetch_bodies([], heads.sink_for, heads.finished) == set()


# Changes ------------------------------------------------------------------------------

def test_append_round_trip(session, dovecot, user):
    body = make_message(5, size=3000)
    when = datetime(2021, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    st = session.select("INBOX")
    uid = session.append("INBOX", body, frozenset("SF"), when)
    assert uid == st.uidnext
    session.append("INBOX", b"Subject: crlf\r\n\r\nalready crlf\r\n", frozenset())
    session.select("INBOX")
    meta = session.fetch_meta(with_date=True)
    assert meta[uid].flags == frozenset("SF") and meta[uid].keywords == frozenset()
    assert meta[uid].internaldate == when
    assert meta[uid].size == len(lf_to_crlf(body))
    got = Collect()
    session.fetch_bodies([uid, uid + 1], got.sink_for, got.finished)
    assert got.bodies() == {uid: body, uid + 1: b"Subject: crlf\n\nalready crlf\n"}
    assert dovecot.server_messages(user)[0] == body      # Dovecot stores LF on disk


def test_append_to_other_folder_returns_uid(session):
    session.create_folder("Archive")
    session.select("INBOX")
    assert session.append("Archive", msg(1), frozenset("D")) == 1
    assert session.append("Archive", msg(2), frozenset()) == 2
    with pytest.raises(CommandRefused):
        session.append("Missing", msg(3))


def test_expunge_only_the_given_uid(session, dovecot, user):
    dovecot.seed(user, [msg(1), msg(2), msg(3)])
    session.select("INBOX")
    other = imap.connect(account(dovecot, user), dovecot.password)
    try:
        other.select("INBOX")
        other.add_flags([2], "T")             # another client marks 2 \Deleted
    finally:
        other.logout()
    session.expunge([1])
    meta = session.fetch_meta()
    assert sorted(meta) == [2, 3]
    assert "T" in meta[2].flags
    session.expunge([])                       # nothing to do


def test_move(session, dovecot, user):
    dovecot.seed(user, [msg(1), msg(2), msg(3)])
    session.create_folder("Archive")
    session.select("INBOX")
    mapping = session.move([1, 3], "Archive")
    assert mapping == {1: 1, 3: 2}
    assert sorted(session.fetch_meta()) == [2]
    session.select("Archive")
    got = Collect()
    session.fetch_bodies([1, 2], got.sink_for, got.finished)
    assert got.bodies() == {1: msg(1), 2: msg(3)}


def test_move_without_move_capability_uses_copy_and_uid_expunge(session, dovecot, user):
    dovecot.seed(user, [msg(1), msg(2)])
    session.create_folder("Archive")
    session.select("INBOX")
    session.capabilities = session.capabilities - {"MOVE"}
    assert session.move([2], "Archive") == {2: 1}
    assert sorted(session.fetch_meta()) == [1]


def test_flags_keep_custom_keywords(session, dovecot, user):
    dovecot.seed(user, [msg(1)])
    session.select("INBOX")
    session._client.add_flags([1], [b"$Label1"])
    session.add_flags([1], "SRF")
    meta = session.fetch_meta()[1]
    assert meta.flags == frozenset("SRF") and meta.keywords == {"$Label1"}
    session.remove_flags([1], "SFx")          # x: not a mapped letter, ignored
    meta = session.fetch_meta()[1]
    assert meta.flags == frozenset("R") and meta.keywords == {"$Label1"}
    session.add_flags([1], "")                # nothing to do
    session.add_flags([], "S")


# Secrets ------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", ["login", "plain"])
def test_trace_never_shows_the_password(dovecot, user, auth):
    lines: list[tuple[str, str]] = []
    s = imap.connect(account(dovecot, user, auth=auth), dovecot.password,
                     trace=lambda d, ln: lines.append((d, ln)))
    s.select("INBOX")
    s.append("INBOX", msg(1))
    s.fetch_meta()
    s.logout()
    text = "\n".join(f"{d} {ln}" for d, ln in lines)
    assert dovecot.password not in text
    plain = base64.b64encode(f"\0{user}\0{dovecot.password}".encode()).decode()
    assert plain not in text
    assert any(d == "S" and "Dovecot" in ln for d, ln in lines)     # the greeting
    assert any(d == "C" and "SELECT" in ln for d, ln in lines)
    verb = "LOGIN" if auth == "login" else "AUTHENTICATE"
    assert any(d == "C" and f"{verb} <redacted>" in ln for d, ln in lines)
    assert not any("body 1" in ln for _d, ln in lines)               # literals: sizes only


def test_failed_login_trace_and_error_hide_password(dovecot, user):
    lines = []
    with pytest.raises(AuthError) as err:
        imap.connect(account(dovecot, user), "Very$ecret", trace=lambda d, ln: lines.append(ln))
    assert "Very$ecret" not in str(err.value) and not any("Very$ecret" in ln for ln in lines)


# Pure helpers -------------------------------------------------------------------------

@pytest.mark.parametrize("flags, letters, keywords", [
    ([], "", set()),
    ([b"\\Seen"], "S", set()),
    ([b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Draft", b"$Forwarded"], "RFTDP", set()),
    ([b"\\SEEN", "$forwarded"], "SP", set()),
    ([b"\\Recent", b"$Label1", "Junk", 1234], "", {"$Label1", "Junk", "1234"}),
    (["\\Seen", "\\Seen"], "S", set()),
])
def test_flags_to_letters(flags, letters, keywords):
    assert flags_to_letters(flags) == (frozenset(letters), frozenset(keywords))


@pytest.mark.parametrize("letters, flags", [
    ("", []),
    ("S", ["\\Seen"]),
    ("TSRPFD", ["\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted"]),
    (frozenset("FS"), ["\\Flagged", "\\Seen"]),
    ("Sax", ["\\Seen"]),
])
def test_letters_to_flags(letters, flags):
    assert letters_to_flags(letters) == flags


@pytest.mark.parametrize("lf, crlf", [
    (b"", b""),
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\r\nb\n", b"a\r\nb\r\n"),
    (b"no newline", b"no newline"),
    (b"\n\n", b"\r\n\r\n"),
])
def test_line_endings(lf, crlf):
    assert lf_to_crlf(lf) == crlf
    assert lf_to_crlf(crlf) == crlf
    assert crlf_to_lf(crlf) == lf.replace(b"\r\n", b"\n")


def test_uid_sets():
    assert uid_sets([]) == []
    assert uid_sets([5, 1, 2, 3, 3, 9]) == ["1:3,5,9"]
    chunks = uid_sets(range(1, 2001, 2), limit=100)
    assert all(len(c) <= 100 for c in chunks)
    assert sorted(int(x) for c in chunks for x in c.split(",")) == list(range(1, 2001, 2))
    with pytest.raises(ValueError):
        uid_sets([0])


def test_set_ranges():
    assert imap._set_ranges("1:*") == [(1, float("inf"))]
    assert imap._set_ranges("*") == [(1, float("inf"))]
    assert imap._set_ranges("5:3,9") == [(3, 5), (9, 9)]
    with pytest.raises(ValueError):
        imap._set_ranges("1 2")


def test_copyuid():
    assert imap._copyuid("7 3:5,9 10:13") == {3: 10, 4: 11, 5: 12, 9: 13}
    assert imap._copyuid("7 1:2 5") is None
    assert imap._copyuid("garbage") is None


@pytest.mark.parametrize("header, expected", [
    (b"Message-ID: <a@b>\r\n\r\n", "<a@b>"),
    (b"message-id:\r\n <folded@b>\r\n\r\n", "<folded@b>"),
    (b"\r\n", None),
    (None, None),
    (b"Message-ID: \r\n\r\n", None),
])
def test_parse_message_id(header, expected):
    assert parse_message_id(header) == expected


@pytest.mark.parametrize("line, expected", [
    ('A1 LOGIN user "pw"', "A1 LOGIN <redacted>"),
    ("A2 AUTHENTICATE PLAIN AHVzZXIAcHc=", "A2 AUTHENTICATE <redacted>"),
    ("a3 login u p", "a3 login <redacted>"),
    ('A4 SELECT "INBOX"', 'A4 SELECT "INBOX"'),
])
def test_redact(line, expected):
    assert redact(line) == expected


# The fast FETCH parser must read every line exactly as imapclient does, or leave it to
# imapclient: a difference would change flags, sizes or UIDs silently.

_TOKENS = [b"UID", b"FLAGS", b"RFC822.SIZE", b"MODSEQ", b"INTERNALDATE", b"NIL", b"nil",
           b"0", b"7", b"007", b"4294967296", b"\\Seen", b"$Label1", b"(", b")", b"()",
           b'"26-Nov-2026 10:00:00 +0000"', b'"a\\"b"', b'""', b"{3}", b"[", b"]", b"%",
           b"\t", b"  ", b"x-gm-labels", b"\\Recent", b"a(b", b"\x01"]


@given(seq=st.sampled_from([b"1", b"01", b"12", b"x"]),
       tokens=st.lists(st.sampled_from(_TOKENS), max_size=12),
       joiner=st.sampled_from([b" ", b""]))
@settings(max_examples=3000, deadline=None)
def test_fast_fetch_parser_agrees_with_imapclient(seq, tokens, joiner):
    line = seq + b" (" + joiner.join(tokens) + b")"
    fast = imap.parse_simple_fetch([line])
    if fast is None:
        return                              # left to imapclient
    assert fast == imap.parse_response([line])


@pytest.mark.parametrize("line", [
    b'1 (UID 5 FLAGS (\\Seen $Label1 123 NIL) RFC822.SIZE 100 '
    b'INTERNALDATE "26-Nov-2026 10:00:00 +0000" MODSEQ (12))',
    b"2 (UID 6 FLAGS () RFC822.SIZE 0 INTERNALDATE NIL)",
    b"3 ()",
])
def test_fast_fetch_parser_reads_metadata_lines(line):
    fast = imap.parse_simple_fetch([line])
    assert fast is not None and fast == imap.parse_response([line])


@pytest.mark.parametrize("line", [
    b"1 (UID 5FLAGS ())", b"1 (UID 05)", b"01 (UID 5)", b'1 (X "a\\"b")', b"1 (UID 5 )",
    b"1 (FLAGS ((a)))", b"1 (UID  5)", b"1 (BODY[] NIL)",
])
def test_fast_fetch_parser_leaves_odd_lines_to_imapclient(line):
    assert imap.parse_simple_fetch([line]) is None
    assert imap.parse_simple_fetch([(b"1 (BODY[] {1}", b"x"), b")"]) is None


def test_system_trust_from_a_hashed_ca_directory_is_used(dovecot, user, tmp_path,
                                                          monkeypatch):
    # A system whose CAs are a hashed directory (as Debian's /etc/ssl/certs): mailsync
    # hands OpenSSL the directory, so the test CA placed there alone is trusted.
    import shutil
    import ssl
    import subprocess
    ca_hash = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in",
                              str(dovecot.ca_file)], capture_output=True, text=True,
                             check=True).stdout.strip()
    hashed = tmp_path / "certs"
    hashed.mkdir()
    shutil.copy(dovecot.ca_file, hashed / f"{ca_hash}.0")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed))
    s = imap.connect(account(dovecot, user, ca_file=None), dovecot.password)
    s.logout()
    # The same CA under a name OpenSSL cannot look up: not a hashed directory, so the
    # usual system bundle applies, which does not trust the test CA.
    (hashed / f"{ca_hash}.0").rename(hashed / "test-ca.pem")
    with pytest.raises(CertificateError):
        imap.connect(account(dovecot, user, ca_file=None), dovecot.password)


def test_vanished_names_only_the_candidates_inside_its_sets():
    said = [b"(EARLIER) 3:5,9", b"12:11"]
    assert imap.parse.vanished_uids(said, [1, 3, 4, 6, 9, 11, 13]) == {3, 4, 9, 11}
    assert imap.parse.vanished_uids([], [1, 2]) == frozenset()
    with pytest.raises(ValueError):
        imap.parse.vanished_uids([b"(EARLIER) 3:x"], [3])
