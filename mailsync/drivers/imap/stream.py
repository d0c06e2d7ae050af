"""Streaming reader for the answer to `UID FETCH <set> (UID BODY.PEEK[])`.

imapclient parses a whole batch of bodies into memory at about a third of imaplib's
speed; this reads the same connection's answer line by line and copies each body
literal to its sink in chunks (CRLF -> LF), so memory stays at one chunk whatever
the message or batch size. It owns nothing but the parsing: the caller sends the
command and maps the errors it raises (ProtocolError for broken answers).
"""

from __future__ import annotations

import re
from typing import Callable

from mailsync.contracts import Sink

CHUNK = 1 << 16
MAX_LITERAL = 1 << 31        # a body literal larger than this is a broken server
MAX_SPOOL = 64 << 20         # largest body held in memory while its UID is still to come
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_FETCH = re.compile(rb"^\* (\d+) FETCH \(", re.I)
_UID = re.compile(rb"\bUID (\d+)", re.I)
_BODY_ITEM = re.compile(rb"BODY\[(?:HEADER)?\](?:<\d+>)? $", re.I)


class StreamError(Exception):
    """The answer breaks the protocol; the message says how."""


class StreamClosed(StreamError):
    """The connection ended in the middle of the answer."""


_LONE_CR = re.compile(rb"\r(?!\n)")


def crlf_to_lf(data: bytes) -> bytes:
    """Every CRLF as LF; a CR not followed by LF is kept.

    When there is no such lone CR (nearly always), deleting every CR is the same and
    runs at twice the speed of bytes.replace, which matters at hundreds of MB."""
    if _LONE_CR.search(data) is None:
        return data.translate(None, b"\r")
    return data.replace(b"\r\n", b"\n")


class LineEndings:
    """CRLF -> LF across chunk boundaries."""

    def __init__(self) -> None:
        self.carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.carry + chunk
        self.carry = b""
        if data.endswith(b"\r"):
            self.carry, data = b"\r", data[:-1]
        return crlf_to_lf(data)

    def flush(self) -> bytes:
        out, self.carry = self.carry, b""
        return out


class FetchReader:
    """Reads untagged FETCH answers until the tagged completion of `tag`."""

    def __init__(self, readline: Callable[[], bytes], read: Callable[[int], bytes],
                 tag: bytes, max_literal: int = MAX_LITERAL) -> None:
        self.readline, self.read = readline, read
        self.tag = tag
        self.max_literal = max_literal
        self.delivered: set[int] = set()

    def run(self, wanted: set[int], sink_for: Callable[[int], Sink],
            done: Callable[[int, int], None]) -> tuple[bytes, bytes]:
        """Deliver each wanted body; returns the completion's (status, text)."""
        while True:
            line = self._line()
            if line.startswith(self.tag + b" "):
                status, _, text = line[len(self.tag) + 1:].partition(b" ")
                return status.upper(), text.rstrip(b"\r\n")
            if line.startswith(b"+"):
                raise StreamError("unexpected continuation request during FETCH")
            if not line.startswith(b"* "):
                raise StreamError(f"unexpected line {line[:60]!r}")
            if line[2:5].upper() == b"BYE":   # the server is hanging up: retry later
                raise StreamClosed(f"server said BYE: {line[6:80]!r}")
            if _FETCH.match(line):
                self._fetch_response(line, wanted, sink_for, done)
            else:
                self._skip_literals(line)   # EXISTS, EXPUNGE, FLAGS updates...

    def _line(self) -> bytes:
        line = self.readline()
        if not line:
            raise StreamClosed("connection closed during FETCH")
        if not line.endswith(b"\n"):
            raise StreamError("over-long or truncated line during FETCH")
        return line

    def _fetch_response(self, line: bytes, wanted: set[int], sink_for, done) -> None:
        text = line
        uid: int | None = None
        delivered_uid, delivered_size = None, 0
        while True:
            m = _UID.search(text)
            if m and uid is None:
                uid = int(m.group(1))
            literal = _LITERAL.search(line)
            if literal is None:
                break
            size = int(literal.group(1))
            if size > self.max_literal:
                raise StreamError(f"literal of {size} bytes is larger than any message")
            is_body = _BODY_ITEM.search(line[:literal.start()]) is not None
            if is_body and uid is not None and uid in wanted:
                self._once(uid)
                delivered_uid, delivered_size = uid, self._copy(size, sink_for(uid))
            elif is_body and uid is None:
                # UID comes after the body in this answer: hold the body until it does.
                if size > MAX_SPOOL:
                    raise StreamError(f"a body of {size} bytes before its UID: too large "
                                      "to hold until the UID says whose it is")
                spooled = _Spool()
                self._copy(size, spooled)
                line = self._line()
                text += line
                m = _UID.search(line)
                if m and int(m.group(1)) in wanted:
                    uid = int(m.group(1))
                    self._once(uid)
                    sink = sink_for(uid)
                    sink.write(spooled.data)
                    delivered_uid, delivered_size = uid, len(spooled.data)
                continue
            else:
                self._discard(size)
            line = self._line()
            text += line
        if delivered_uid is not None:
            done(delivered_uid, delivered_size)

    def _once(self, uid: int) -> None:
        """A second body for one UID: which is the message? Neither is stored."""
        if uid in self.delivered:
            raise StreamError(f"the server sent the body of UID {uid} twice")
        self.delivered.add(uid)

    def _copy(self, size: int, sink: Sink) -> int:
        endings, remaining, written = LineEndings(), size, 0
        while remaining:
            chunk = self.read(min(remaining, CHUNK))
            if not chunk:
                raise StreamClosed("connection closed inside a message")
            remaining -= len(chunk)
            out = endings.feed(chunk)
            sink.write(out)
            written += len(out)
        tail = endings.flush()
        if tail:
            sink.write(tail)
            written += len(tail)
        return written

    def _discard(self, size: int) -> None:
        while size:
            chunk = self.read(min(size, CHUNK))
            if not chunk:
                raise StreamClosed("connection closed inside a literal")
            size -= len(chunk)

    def _skip_literals(self, line: bytes) -> None:
        while (literal := _LITERAL.search(line)) is not None:
            size = int(literal.group(1))
            if size > self.max_literal:
                raise StreamError(f"literal of {size} bytes is larger than any message")
            self._discard(size)
            line = self._line()


class _Spool:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)
