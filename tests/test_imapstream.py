"""The streaming FETCH reader: bodies arrive whole, in chunks, whatever the framing."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, strategies as st

from mailsync.drivers.imap.stream import FetchReader, LineEndings, StreamClosed, StreamError


class Collect:
    def __init__(self):
        self.bodies, self.done = {}, []

    def sink_for(self, uid):
        self.bodies[uid] = io.BytesIO()
        return self.bodies[uid]

    def finished(self, uid, n):
        self.done.append((uid, n))


def reader(data: bytes, tag=b"A1", chunk=7):
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=chunk)
    return FetchReader(lambda: stream.readline(1 << 20), stream.read, tag)


def answer(*messages, tail=b"A1 OK done\r\n", uid_first=True):
    out = b""
    for n, (uid, body) in enumerate(messages, 1):
        wire = body.replace(b"\n", b"\r\n")
        if uid_first:
            out += b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (n, uid, len(wire), wire)
        else:
            out += b"* %d FETCH (BODY[] {%d}\r\n%s UID %d)\r\n" % (n, len(wire), wire, uid)
    return out + tail


bodies = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b""))


@given(st.lists(bodies, min_size=1, max_size=5), st.booleans(), st.integers(1, 50))
def test_bodies_come_back_exact_with_lf(bodies_list, uid_first, chunk):
    messages = [(10 + i, b) for i, b in enumerate(bodies_list)]
    got = Collect()
    status, _ = reader(answer(*messages, uid_first=uid_first), chunk=chunk).run(
        {uid for uid, _ in messages}, got.sink_for, got.finished)
    assert status == b"OK"
    assert {u: b.getvalue() for u, b in got.bodies.items()} == dict(messages)
    assert [u for u, _ in got.done] == [u for u, _ in messages]


def test_unsolicited_answers_are_skipped():
    data = (b"* 3 EXISTS\r\n* 1 FETCH (FLAGS (\\Seen))\r\n"
            + answer((5, b"hello\n"), tail=b"") + b"* 2 EXPUNGE\r\nA1 OK done\r\n")
    got = Collect()
    reader(data).run({5}, got.sink_for, got.finished)
    assert got.bodies[5].getvalue() == b"hello\n"


def test_uids_not_asked_for_are_not_delivered():
    got = Collect()
    reader(answer((5, b"a\n"), (6, b"b\n"))).run({6}, got.sink_for, got.finished)
    assert list(got.bodies) == [6]


def test_no_completion_is_returned():
    status, text = reader(b"A1 NO [EXPUNGEISSUED] some gone\r\n").run(set(), None, None)
    assert status == b"NO" and b"EXPUNGEISSUED" in text


@pytest.mark.parametrize("data, error", [
    (b"* 1 FETCH (UID 5 BODY[] {100}\r\nshort", StreamClosed),
    (b"* 1 FETCH (UID 5 BODY[] {10}\r\n", StreamClosed),
    (b"garbage\r\n", StreamError),
    (b"+ go ahead\r\n", StreamError),
    (b"* BYE shutting down\r\n", StreamError),
    (b"* 1 FETCH (UID 5 BODY[] {99999999999999}\r\n", StreamError),
    (b"", StreamClosed),
])
def test_broken_answers_raise(data, error):
    with pytest.raises(error):
        reader(data).run({5}, Collect().sink_for, Collect().finished)


@given(st.binary(max_size=200), st.integers(1, 9))
def test_line_endings_across_chunks(data, size):
    endings = LineEndings()
    out = b"".join(endings.feed(data[i:i + size]) for i in range(0, len(data), size))
    assert out + endings.flush() == data.replace(b"\r\n", b"\n")


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"\r\r"]), max_size=40)
       .map(b"".join), st.integers(1, 9))
def test_lone_carriage_returns_survive_every_chunking(data, size):
    endings = LineEndings()
    out = b"".join(endings.feed(data[i:i + size]) for i in range(0, len(data), size))
    assert out + endings.flush() == data.replace(b"\r\n", b"\n")
