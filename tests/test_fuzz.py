"""Fuzzing the response handling mailsync owns: only its documented errors ever escape.

Valid server answers are mutated (bytes flipped, inserted, cut, repeated, numbers made
absurd, literals resized) and fed, chunked at random, to
  - pop3.Wire (status, lines, stream_body) and Pop3Session.listing / retrieve,
  - mailsync.drivers.imap.stream.FetchReader,
  - the IMAP session (imaplib + imapclient + mailsync's validation) for LIST, SELECT,
    STATUS, metadata FETCH and streamed body FETCH, over an in-memory connection,
  - names.decode_mutf7 and the folder name -> local path mapping,
  - imap.flags_to_letters, parse_message_id, _set_ranges.
Property: the only exceptions are ProtocolError / TemporaryError (MailsyncError for the
IMAP session, where a NO is a CommandRefused), StreamError, or ValueError for the pure
helpers -- never IndexError, TypeError, UnicodeDecodeError, MemoryError... -- and every
result is within bounds (UIDs asked for, at most once, sizes and counts in range, paths
inside the maildir).
"""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import imaplib
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from imapclient import IMAPClient
from imapclient.imapclient import SocketTimeout

from mailsync import folders, names
from mailsync.drivers import imap, pop3
from mailsync.config import Account
from mailsync.errors import MailsyncError, ProtocolError, TemporaryError
from mailsync.drivers.imap.stream import FetchReader, StreamError

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ACCOUNT = Account(name="fuzz", protocol="imap", host="fuzz.invalid", user="u", port=143,
                  tls="none", maildir=Path("/nonexistent"), state_dir=Path("/nonexistent"))

# Tokens that break parsers: line ends, literals of odd sizes, brackets, quotes, numbers
# out of range, responses out of place.
NASTY = [b"\r\n", b"\r", b"\n", b"{0}\r\n", b"{5}\r\n", b"{99999999999999}\r\n",
         b"{70000000}\r\n", b"(", b")", b"[", b"]", b'"', b"\\", b" ", b"NIL", b"* ",
         b"+ go\r\n", b"* BYE bye\r\n", b"-1", b"0", b"4294967296",
         b"99999999999999999999999", b"UID ", b"FLAGS ", b"BODY[] ", b"\x00", b"\xff",
         b"\xc3", b"* 1 FETCH (", b".\r\n", b"..", b"+OK", b"-ERR", b"-ERR [IN-USE]",
         b"T2 OK done\r\n", b"T9 OK\r\n", b"&", b"&-", b"&AOQ-", b"/", b".."]


@st.composite
def mutated(draw, base: bytes, max_ops: int = 5) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(["byte", "insert", "delete", "repeat", "cut", "number"]))
        pos = draw(st.integers(0, len(data)))
        if op == "byte" and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(NASTY) | st.binary(max_size=6))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 12))]
        elif op == "repeat":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 120))]
        elif op == "cut":
            del data[pos:]
        elif op == "number":            # replace the next number by another one
            m = re.compile(rb"\d+").search(bytes(data), pos)
            if m:
                data[m.start():m.end()] = str(draw(st.sampled_from(
                    [-1, 0, 1, 2, 7, 65535, 2**31, 2**32 - 1, 2**32, 2**63, 10**30]))).encode()
    return bytes(data)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    out, pos = [], 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)):
        out.append(data[pos:cut])
        pos = cut
    out.append(data[pos:])
    return [c for c in out if c]


class FakeSock:
    """recv() hands out the chunks in order, then EOF (b"") or a timeout."""

    def __init__(self, chunks: list[bytes], then_timeout: bool = False) -> None:
        self.chunks, self.then_timeout = list(chunks), then_timeout

    def recv(self, n: int) -> bytes:
        if not self.chunks:
            if self.then_timeout:
                raise socket.timeout("timed out")
            return b""
        chunk = self.chunks.pop(0)
        if len(chunk) > n:
            self.chunks.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk

    def sendall(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.data += data


# POP3 -------------------------------------------------------------------------------

POP3_SESSION = (b"+OK 3 300\r\n"                                        # STAT
                b"+OK\r\n1 100\r\n2 120\r\n3 80\r\n.\r\n"               # LIST
                b"+OK\r\n1 uid-1\r\n2 uid-2\r\n3 uid-3\r\n.\r\n")       # UIDL
POP3_RETR = (b"+OK 100 octets\r\nSubject: x\r\n\r\n..dot\r\nline\r\n.\r\n"
             b"+OK\r\n\r\n.\r\n"
             b"+OK\r\nno final line end\r\n.\r\n")


@FUZZ
@given(mutated(POP3_SESSION), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_pop3_listing_raises_only_protocol_or_temporary_errors(data, cuts, timeout):
    session = pop3.Pop3Session(ACCOUNT, SimpleNamespace(sock=FakeSock(chunked(data, cuts),
                                                                        timeout)), None)
    try:
        listing = session.listing()
    except (ProtocolError, TemporaryError):
        return
    count = len(listing)
    assert all(1 <= m.number for m in listing)
    assert len({m.number for m in listing}) == count
    uids = [m.uid for m in listing if m.uid is not None]
    assert len(set(uids)) == len(uids)
    assert all(0 < len(u) <= 70 and u.isascii() and u.isprintable() and " " not in u
               for u in uids)
    assert all(m.size >= 0 for m in listing)


@FUZZ
@given(mutated(POP3_RETR), st.lists(st.integers(0, 200), max_size=8), st.booleans(),
       st.integers(8, 64))
def test_pop3_retrieve_raises_only_protocol_or_temporary_errors(data, cuts, timeout, long):
    session = pop3.Pop3Session(ACCOUNT, SimpleNamespace(sock=FakeSock(chunked(data, cuts),
                                                                        timeout)), None)
    sinks: dict[int, Sink] = {}
    done: list[tuple[int, int]] = []
    with mock.patch.object(pop3, "LONG_LINE", long):     # exercise the long-line cut
        try:
            session.retrieve([1, 2, 3], lambda n: sinks.setdefault(n, Sink()),
                             lambda n, size: done.append((n, size)))
        except (ProtocolError, TemporaryError):
            pass
    assert [n for n, _ in done] == sorted(n for n, _ in done)
    for n, size in done:
        assert size == len(sinks[n].data)
    assert sum(len(s.data) for s in sinks.values()) <= len(data)


@FUZZ
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"")), max_size=4),
       st.lists(st.integers(0, 300), max_size=10), st.integers(6, 40))
@example([b".\x00\x00\x00\x00\x00\n\x00\n"], [10], 6)   # a cut inside a line-start ".."
def test_pop3_bodies_survive_any_chunking_and_the_long_line_cut(bodies, cuts, long):
    # Valid replies, cut anywhere, with LONG_LINE tiny so that lines are cut mid-way:
    # each body comes back exactly (LF line ends, dots unstuffed).
    bodies = [b if b.endswith(b"\n") or not b else b + b"\n" for b in bodies]

    def stuffed(body: bytes) -> bytes:
        lines = body.split(b"\n")[:-1] if body else []
        return b"".join((b"." if ln.startswith(b".") else b"") + ln + b"\r\n"
                        for ln in lines)

    wire_bytes = b"".join(b"+OK\r\n" + stuffed(b) + b".\r\n" for b in bodies)
    wire = pop3.Wire(FakeSock(chunked(wire_bytes, cuts)), "account fuzz", None)
    with mock.patch.object(pop3, "LONG_LINE", long):
        for body in bodies:
            wire.status("RETR")
            sink = Sink()
            assert wire.stream_body(sink) == len(body)
            assert sink.data == body


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_pop3_wire_takes_any_bytes(data, cuts):
    wire = pop3.Wire(FakeSock(chunked(data, cuts)), "account fuzz", None)
    try:
        wire.status("LIST")
        lines = wire.lines("LIST")
    except (ProtocolError, TemporaryError):
        return
    assert all(b"\r\n" not in ln for ln in lines)


# The streaming FETCH reader ---------------------------------------------------------

def fetch_answer(bodies: dict[int, bytes], tag: bytes = b"A1") -> bytes:
    out = b"* 9 EXISTS\r\n"
    for seq, (uid, body) in enumerate(bodies.items(), 1):
        wire = body.replace(b"\n", b"\r\n")
        if uid % 2:
            out += b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (seq, uid, len(wire), wire)
        else:
            out += b"* %d FETCH (BODY[] {%d}\r\n%s UID %d)\r\n" % (seq, len(wire), wire, uid)
    return out + b"* 3 FETCH (FLAGS (\\Seen) UID 3)\r\n" + tag + b" OK done\r\n"


FETCH_ANSWER = fetch_answer({1: b"Subject: a\n\nbody {5}\n", 2: b"x\n",
                             4: b"Subject: c\n\n)\n* 1 FETCH (UID 9)\n"})


@FUZZ
@given(mutated(FETCH_ANSWER, max_ops=6), st.integers(1, 64),
       st.sets(st.sampled_from([1, 2, 3, 4, 9]), min_size=1))
def test_fetch_reader_raises_only_stream_errors(data, chunk, wanted):
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=chunk)
    sinks: dict[int, Sink] = {}
    done: list[int] = []

    def sink_for(uid: int) -> Sink:
        assert uid in wanted and uid not in sinks
        sinks[uid] = Sink()
        return sinks[uid]

    reader = FetchReader(lambda: stream.readline(1 << 20), stream.read, b"A1",
                         max_literal=1 << 20)
    try:
        status, text = reader.run(wanted, sink_for, lambda uid, n: done.append(uid))
    except StreamError:
        status = None
    assert len(done) == len(set(done)) and set(done) <= wanted
    assert sum(len(s.data) for s in sinks.values()) <= len(data)
    if status is not None:
        assert isinstance(status, bytes) and isinstance(text, bytes)


# The IMAP session over an in-memory connection --------------------------------------

class WireIMAP4(imap._BoundedReads, imaplib.IMAP4):
    """imaplib reading a canned server transcript; tags are T0, T1, ..."""

    def __init__(self, transcript: bytes) -> None:
        self._transcript = transcript
        super().__init__()
        self.tagpre, self.tagnum = b"T", 0
        self.tagre = re.compile(rb"(?P<tag>T\d+) (?P<type>[A-Z]+) (?P<data>.*)", re.ASCII)

    def open(self, host="", port=143, timeout=None) -> None:
        self.host, self.port, self.sock = host, port, None
        self.file = io.BufferedReader(io.BytesIO(
            b"* PREAUTH [CAPABILITY IMAP4rev1 UIDPLUS CONDSTORE ENABLE] hi\r\n"
            + self._transcript), buffer_size=37)

    def _get_capabilities(self) -> None:     # the greeting had them: no command
        self.capabilities = ("IMAP4REV1", "UIDPLUS", "CONDSTORE", "ENABLE")

    def send(self, data: bytes) -> None:
        pass

    def shutdown(self) -> None:
        pass


def imap_session(transcript: bytes) -> imap.ImapSession:
    client = IMAPClient.__new__(IMAPClient)
    client.host, client.port, client.ssl, client.stream = "fuzz.invalid", 143, False, False
    client.use_uid, client.folder_encode, client.normalise_times = True, False, False
    client._timeout, client._starttls_done = SocketTimeout(1, 1), False
    client._cached_capabilities, client._idle_tag = (b"IMAP4REV1", b"UIDPLUS"), None
    client._imap = WireIMAP4(b'* LIST (\\Noselect) "/" ""\r\nT0 OK done\r\n' + transcript)
    imap._install_trace(client, None)
    return imap.ImapSession(ACCOUNT, client)


SELECT = (b"* FLAGS (\\Seen \\Deleted)\r\n* 3 EXISTS\r\n* 0 RECENT\r\n"
          b"* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 9] ok\r\n"
          b"* OK [PERMANENTFLAGS (\\Seen \\*)] ok\r\nT1 OK [READ-WRITE] done\r\n")
LIST = (b'* LIST (\\HasNoChildren) "/" "INBOX"\r\n'
        b'* LIST (\\HasChildren \\Noselect) "/" "&AOQ-rger"\r\n'
        b'* LIST () "." {9}\r\nA.B/../..\r\n'
        b'* LIST (\\Sent) NIL "Sent Items"\r\n'
        b'* LIST () "/" 2024\r\nT1 OK done\r\n')
STATUS = b'* STATUS "INBOX" (MESSAGES 3 UIDNEXT 9 UIDVALIDITY 7)\r\nT1 OK done\r\n'
META = (b'* 1 FETCH (UID 4 FLAGS (\\Seen $Label 123) RFC822.SIZE 10 '
        b'INTERNALDATE "01-Jan-2024 10:00:00 +0100")\r\n'
        b"* 2 FETCH (FLAGS () UID 5 RFC822.SIZE 0 INTERNALDATE NIL)\r\n"
        b"* 2 FETCH (FLAGS (\\Deleted))\r\n"
        b"* 3 FETCH (UID 8 FLAGS (\\Draft) RFC822.SIZE 4294967295 "
        b"BODY[HEADER.FIELDS (MESSAGE-ID)] {23}\r\nMessage-ID: <a@b>\r\n\r\n\r\n"
        b" INTERNALDATE \"31-Dec-2023 23:59:59 -0000\")\r\n"
        b"* 4 EXPUNGE\r\nT2 OK done\r\n")
BODIES = fetch_answer({4: b"Subject: a\n\nbody\n", 5: b"", 8: b"x\n"}, tag=b"T2")


def allowed(exc: BaseException) -> bool:
    return isinstance(exc, MailsyncError)


@FUZZ
@given(mutated(LIST, max_ops=6))
def test_imap_list_raises_only_mailsync_errors(data):
    session = imap_session(data)
    try:
        listed = session.list_folders()
    except MailsyncError:
        return
    for folder in listed:
        assert isinstance(folder.name, str) and isinstance(folder.raw, str)
        assert folder.delimiter is None or len(folder.delimiter) == 1
        try:
            parts = names.canonical_parts(names.server_to_components(folder.name,
                                                                     folder.delimiter))
            relpath = names.local_relpath(parts, "fs")
        except ValueError:
            continue
        assert names.is_safe_relpath(relpath)


@FUZZ
@given(mutated(SELECT, max_ops=6), st.booleans())
def test_imap_select_raises_only_mailsync_errors(data, readonly):
    session = imap_session(data)
    try:
        status = session.select("INBOX", readonly=readonly)
    except MailsyncError:
        return
    assert 1 <= status.uidvalidity <= imap.MAX_NUMBER
    assert 1 <= status.uidnext <= imap.MAX_NUMBER
    assert 0 <= status.exists <= imap.MAX_NUMBER


@FUZZ
@given(mutated(STATUS, max_ops=5))
def test_imap_status_raises_only_mailsync_errors(data):
    session = imap_session(data)
    try:
        status = session.status("INBOX")
    except MailsyncError:
        return
    assert 1 <= status.uidvalidity <= imap.MAX_NUMBER
    assert 0 <= status.exists <= imap.MAX_NUMBER


@FUZZ
@given(mutated(META, max_ops=6), st.sampled_from(["1:*", "4:8", "5"]), st.booleans())
def test_imap_fetch_meta_raises_only_mailsync_errors(data, uidset, with_message_id):
    session = imap_session(SELECT + data)
    session.select("INBOX")
    try:
        metas = session.fetch_meta(uidset, with_message_id=with_message_id)
    except MailsyncError:
        return
    ranges = imap._set_ranges(uidset)
    for uid, meta in metas.items():
        assert uid == meta.uid and 1 <= uid <= imap.MAX_NUMBER
        assert any(lo <= uid <= hi for lo, hi in ranges)
        assert 0 <= meta.size <= imap.MAX_NUMBER64
        assert meta.flags <= set("DFPRST")


@FUZZ
@given(mutated(BODIES, max_ops=6))
def test_imap_streamed_bodies_raise_only_mailsync_errors(data):
    session = imap_session(SELECT + data)
    session.select("INBOX")
    sinks: dict[int, Sink] = {}
    done: list[int] = []
    wanted = {4, 5, 8}
    try:
        got = session.fetch_bodies(sorted(wanted), lambda uid: sinks.setdefault(uid, Sink()),
                                   lambda uid, n: done.append(uid),
                                   sizes={4: 20, 5: 0, 8: 3})
    except MailsyncError:
        got = None
    assert len(done) == len(set(done)) and set(done) <= wanted
    if got is not None:
        assert got == set(done)


# Names ------------------------------------------------------------------------------

mutf7_like = st.one_of(
    st.text(),
    st.text(alphabet="&-+,/AOQZaz09 .~\x00\x7f"),
    st.text(min_size=1).map(names.encode_mutf7).flatmap(
        lambda s: mutated(s.encode(), 3).map(lambda b: b.decode("latin-1"))))


@FUZZ
@given(st.one_of(mutf7_like, st.binary()))
def test_decode_mutf7_raises_only_value_error_and_is_canonical(name):
    try:
        decoded = names.decode_mutf7(name)
    except ValueError:
        return
    text = name.decode("ascii") if isinstance(name, bytes) else name
    assert names.encode_mutf7(decoded) == text


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("maildir")


@FUZZ
@given(st.one_of(st.text(), st.text(alphabet="./\\\x00%+nwcurtmpINBOXinbox~ ")),
       st.sampled_from(["/", ".", "\\", None, "%"]), st.sampled_from(names.LAYOUTS))
def test_any_server_name_maps_inside_the_maildir_and_back(root, name, delimiter, layout):
    try:
        parts = names.canonical_parts(names.server_to_components(name, delimiter))
        relpath = names.local_relpath(parts, layout)
    except ValueError:
        return
    assert names.is_safe_relpath(relpath)
    assert all(len(c.encode()) <= names.MAX_COMPONENT_BYTES for c in relpath.split("/") if c)
    if layout == "fs":
        assert not {c.lower() for c in relpath.split("/")} & {"new", "cur", "tmp"}
    assert names.parts_from_local(relpath, layout) == parts
    path = folders.resolve(root, relpath)
    real = os.path.realpath(path)
    assert real == os.path.realpath(root) or real.startswith(os.path.realpath(root) + os.sep)


@FUZZ
@given(st.text(max_size=30), st.text(max_size=30), st.sampled_from(["/", "."]),
       st.sampled_from(names.LAYOUTS))
def test_different_server_names_never_share_a_local_folder(a, b, delimiter, layout):
    try:
        pa = names.canonical_parts(names.server_to_components(a, delimiter))
        pb = names.canonical_parts(names.server_to_components(b, delimiter))
        ra, rb = names.local_relpath(pa, layout), names.local_relpath(pb, layout)
    except ValueError:
        return
    assert (pa == pb) == (ra == rb)


# Small IMAP parsers -----------------------------------------------------------------

@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=12), st.text(max_size=12),
                          st.integers(-10, 10**20))))
def test_flags_to_letters_takes_any_flag(flags):
    letters, keywords = imap.flags_to_letters(flags)
    assert letters <= set("DFPRST")
    assert all(isinstance(k, str) and k for k in keywords)


@FUZZ
@given(st.one_of(st.none(), st.binary(max_size=200),
                 mutated(b"Message-ID:\r\n <a@b>\r\nX: y\r\n\r\n")))
def test_parse_message_id_takes_any_header(header):
    found = imap.parse_message_id(header)
    assert found is None or (isinstance(found, str) and found == found.strip()
                             and "\n" not in found)


@FUZZ
@given(st.one_of(st.text(max_size=20), st.text(alphabet="0123456789:,*", max_size=20)))
def test_set_ranges_raises_only_value_error(text):
    try:
        ranges = imap._set_ranges(text)
    except ValueError:
        return
    assert ranges and all(0 <= lo <= hi for lo, hi in ranges)
