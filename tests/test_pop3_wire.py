"""The streaming RETR reader: dot-unstuffing, CRLF -> LF, terminator across chunks."""

import io

import pytest
from hypothesis import given, strategies as st

from mailsync.errors import ProtocolError, TemporaryError
from mailsync.drivers.pop3 import Wire


class FakeSock:
    def __init__(self, data: bytes, chunk: int):
        self.data, self.chunk = data, chunk

    def recv(self, n):
        n = min(n, self.chunk)
        out, self.data = self.data[:n], self.data[n:]
        return out

    def sendall(self, data):
        pass


def stuff(message: bytes) -> bytes:
    """What a POP3 server sends for a message with LF line ends."""
    lines = message.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
    return b"+OK\r\n" + body + b".\r\n"


def read(wire_bytes: bytes, chunk: int, count: int = 1) -> list[bytes]:
    wire = Wire(FakeSock(wire_bytes, chunk), "test", None)
    out = []
    for _ in range(count):
        assert wire.status("RETR").startswith(b"+OK")
        sink = io.BytesIO()
        wire.stream_body(sink)
        out.append(sink.getvalue())
    return out


lines = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                 max_size=20)


@given(lines, st.integers(1, 17))
def test_any_message_comes_back_identical(message_lines, chunk):
    message = b"".join(ln + b"\n" for ln in message_lines)
    assert read(stuff(message), chunk) == [message]


@given(st.lists(lines, min_size=1, max_size=4), st.integers(1, 11))
def test_pipelined_replies_are_split_exactly(messages, chunk):
    bodies = [b"".join(ln + b"\n" for ln in m) for m in messages]
    assert read(b"".join(stuff(b) for b in bodies), chunk, len(bodies)) == bodies


def test_lines_starting_with_dots_are_unstuffed():
    message = b".\n..\n.hidden\nend\n"
    assert read(stuff(message), 3) == [message]


def test_a_very_long_line_is_streamed():
    message = b"x" * (3 << 20) + b"\n"
    assert read(stuff(message), 1 << 16) == [message]


def test_connection_closed_mid_message_is_a_temporary_failure():
    with pytest.raises(TemporaryError):
        read(b"+OK\r\nhalf a mess", 4)


def test_error_reply_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        read(b"-ERR no such message\r\n", 4)


def test_in_use_reply_is_temporary():
    wire = Wire(FakeSock(b"-ERR [IN-USE] locked\r\n", 100), "test", None)
    with pytest.raises(TemporaryError):
        wire.status("STAT")
