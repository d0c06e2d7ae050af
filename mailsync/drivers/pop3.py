"""POP3 adapter: connect (TLS verified), log in, list, stream RETR, DELE, QUIT.

poplib does the greeting, STLS and login; after that this module speaks the protocol
itself over the same socket so that RETR can be pipelined and streamed in chunks
(dot-unstuffed, CRLF -> LF) straight into a file, with memory bounded by the chunk
size rather than the message. The server deletes nothing until QUIT: abort() closes
the connection without it.
"""

from __future__ import annotations

import base64
import poplib
import socket
import ssl
from typing import Callable, Iterable

from mailsync.config import Account
from mailsync.contracts import Sink
from mailsync.errors import (AuthError, MailsyncError, ProtocolError, TemporaryError,
                             UnreachableError)
from mailsync.pop3fetch.plan import ServerMessage
from mailsync.secure import (connect_error, greeting_protocol, mismatch_error,
                             plain_connection, tls_context)

CHUNK = 1 << 16
MAX_LINE = 8192
LONG_LINE = 1 << 20          # a line this long without CRLF is streamed in pieces
PIPELINE_WINDOW = 64         # RETR/DELE commands in flight at once
TEMPORARY_CODES = (b"[IN-USE]", b"[LOGIN-DELAY]", b"[SYS/TEMP]")
POPLIB_EOF = "-ERR EOF"      # poplib's error_proto text (a str) when the server hung up

Trace = Callable[[str, str], None]


def transform(piece: bytes) -> bytes:
    """Undo dot-stuffing and turn CRLF into LF in a piece that starts at a line start."""
    return piece.replace(b"\r\n..", b"\r\n.").replace(b"\r\n", b"\n")


class Wire:
    """Buffered reads over the socket, owned by this module after login."""

    def __init__(self, sock: socket.socket, label: str, trace: Trace | None) -> None:
        self.sock = sock
        self.label = label
        self.trace = trace
        self.buf = b""

    def send(self, lines: Iterable[str]) -> None:
        lines = list(lines)
        if self.trace:
            for line in lines:
                self.trace("C", line)
        self._io(lambda: self.sock.sendall("".join(f"{ln}\r\n" for ln in lines).encode()))

    def _fill(self) -> None:
        data = self._io(lambda: self.sock.recv(CHUNK))
        if not data:
            raise TemporaryError(f"{self.label}: the server closed the connection",
                                 "nothing was deleted that is not stored; run again")
        self.buf += data

    def _io(self, op: Callable):
        try:
            return op()
        except (TimeoutError, socket.timeout):
            raise TemporaryError(f"{self.label}: the server did not answer in time",
                                 "run again later, or raise timeout") from None
        except ssl.SSLError as exc:
            raise ProtocolError(f"{self.label}: TLS error: {exc.reason or exc}",
                                "run again; report it if it persists") from None
        except OSError as exc:
            raise TemporaryError(f"{self.label}: connection lost: {exc.strerror or exc}",
                                 "nothing was deleted that is not stored; run again") from None

    def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2:]
                if self.trace:
                    self.trace("S", line.decode("utf-8", "replace"))
                return line
            if len(self.buf) > MAX_LINE:
                raise ProtocolError(f"{self.label}: the server sent an over-long line",
                                    "the server is misbehaving; report it to its admin")
            self._fill()

    def status(self, what: str) -> bytes:
        line = self.readline()
        if line.startswith(b"+OK"):
            return line
        text = line.decode("utf-8", "replace")[:200]
        if line.startswith(b"-ERR"):
            if any(code in line for code in TEMPORARY_CODES):
                raise TemporaryError(f"{self.label}: server busy: {text}", "retry later")
            raise ProtocolError(f"{self.label}: {what} refused: {text}",
                                "the server refused a command it must accept")
        raise ProtocolError(f"{self.label}: unexpected reply to {what}: {text!r}",
                            "the server is misbehaving; report it to its admin")

    def lines(self, what: str) -> list[bytes]:
        """A multi-line reply's lines (small replies only: LIST, UIDL, CAPA)."""
        out = []
        while (line := self.readline()) != b".":
            out.append(line[1:] if line.startswith(b"..") else line)
            if len(out) > 10_000_000:
                raise ProtocolError(f"{self.label}: endless {what} listing", "")
        return out

    def stream_body(self, sink: Sink) -> int:
        """Copy one multi-line reply into sink; returns the bytes written."""
        # A virtual CRLF before the first line lets one pattern find the terminator
        # and line-start dots everywhere, including an empty message.
        buf, self.buf = b"\r\n" + self.buf, b""
        first, written = True, 0
        while True:
            end = buf.find(b"\r\n.\r\n")
            if end >= 0:
                piece, self.buf = buf[:end + 2], buf[end + 5:]
                return written + self._emit(sink, piece, first)
            cut = buf.rfind(b"\r\n")
            if cut <= 0 and len(buf) > max(LONG_LINE, 8):
                # no CRLF in reach: no pattern can span this cut (the 8 keeps a line-start
                # "\r\n.." whole on the emitted side however small LONG_LINE is)
                cut = len(buf) - 4
            if cut > 0:
                written += self._emit(sink, buf[:cut], first)
                first, buf = False, buf[cut:]
            data = self._io(lambda: self.sock.recv(CHUNK))
            if not data:
                raise TemporaryError(f"{self.label}: the server closed the connection "
                                     "mid-message", "nothing was deleted that is not "
                                     "stored; run again")
            buf += data

    @staticmethod
    def _emit(sink: Sink, piece: bytes, first: bool) -> int:
        out = transform(piece)
        if first:
            out = out[1:]
        sink.write(out)
        return len(out)


class Pop3Session:
    """One logged-in POP3 session."""

    def __init__(self, account: Account, client: poplib.POP3, trace: Trace | None) -> None:
        self.account = account
        self.label = f"account {account.name}"
        self.client = client
        self.wire = Wire(client.sock, self.label, trace)
        self.pipelining = False

    # Listing ----------------------------------------------------------------------------
    def capabilities(self) -> dict[str, list[str]]:
        self.wire.send(["CAPA"])
        try:
            self.wire.status("CAPA")
        except ProtocolError:
            return {}
        caps = {}
        for line in self.wire.lines("CAPA"):
            words = line.decode("ascii", "replace").split()
            if words:
                caps[words[0].upper()] = words[1:]
        self.pipelining = "PIPELINING" in caps
        return caps

    def stat(self) -> tuple[int, int]:
        self.wire.send(["STAT"])
        parts = self.wire.status("STAT").split()
        try:
            return int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise ProtocolError(f"{self.label}: malformed STAT reply", "") from None

    def listing(self) -> list[ServerMessage]:
        count, _ = self.stat()
        self.wire.send(["LIST"])
        self.wire.status("LIST")
        sizes = self._pairs(self.wire.lines("LIST"), count, "LIST", self._size)
        self.wire.send(["UIDL"])
        try:
            self.wire.status("UIDL")
            uids = self._pairs(self.wire.lines("UIDL"), count, "UIDL", self._uid)
        except ProtocolError as exc:
            if "refused" not in exc.message:
                raise
            uids = {}
        if uids and len(set(uids.values())) != len(uids):
            raise ProtocolError(f"{self.label}: the server listed one UIDL twice",
                                "the server is misbehaving; report it to its admin")
        return [ServerMessage(n, uids.get(n), sizes[n]) for n in sorted(sizes)]

    @staticmethod
    def _size(text: bytes) -> int:
        size = int(text)
        if size < 0:
            raise ValueError(size)
        return size

    @staticmethod
    def _uid(text: bytes) -> str:
        uid = text.decode("ascii")
        if not (0 < len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid)):
            raise ValueError(uid)
        return uid

    def _pairs(self, lines: list[bytes], count: int, what: str, conv) -> dict:
        out = {}
        for line in lines:
            try:
                num, value = line.split(None, 1)
                n = int(num)
                if not 1 <= n <= count or n in out:
                    raise ValueError(n)
                out[n] = conv(value.strip())
            except (ValueError, UnicodeDecodeError):
                raise ProtocolError(f"{self.label}: malformed {what} line "
                                    f"{line[:80]!r}", "the server is misbehaving") from None
        return out

    # Transfer ---------------------------------------------------------------------------
    def retrieve(self, numbers: list[int], open_sink: Callable[[int], Sink],
                 done: Callable[[int, int], None]) -> None:
        """RETR each message into the sink open_sink(number) gives; done(number, size)."""
        window = PIPELINE_WINDOW if self.pipelining else 1
        for start in range(0, len(numbers), window):
            group = numbers[start:start + window]
            self.wire.send(f"RETR {n}" for n in group)
            for n in group:
                self.wire.status(f"RETR {n}")
                sink = open_sink(n)
                size = self.wire.stream_body(sink)
                done(n, size)

    def delete(self, numbers: list[int]) -> None:
        window = PIPELINE_WINDOW if self.pipelining else 1
        for start in range(0, len(numbers), window):
            group = numbers[start:start + window]
            self.wire.send(f"DELE {n}" for n in group)
            for n in group:
                self.wire.status(f"DELE {n}")

    def quit(self) -> None:
        """QUIT: only now does the server carry out the deletions."""
        self.wire.send(["QUIT"])
        self.wire.status("QUIT")
        self.close()

    def abort(self) -> None:
        """Drop the connection without QUIT, so the server deletes nothing."""
        self.close()

    def close(self) -> None:
        try:
            self.client.sock.close()
        except OSError:
            pass


def connect(account: Account, secret: str, trace: Trace | None = None,
            _retry_oauth: bool = True) -> Pop3Session:
    """Connect, secure and log in, mapping every failure to the contract's exit codes."""
    label = f"account {account.name}"
    try:
        client = _open(account)
        if trace:
            trace("S", client.getwelcome().decode("utf-8", "replace"))
    except OSError as exc:   # socket and TLS failures alike
        raise connect_error(account, exc) from None
    except poplib.error_proto as exc:
        if exc.args and exc.args[0] == POPLIB_EOF:
            raise TemporaryError(f"{label}: {account.host}:{account.port} closed the "
                                 "connection before its greeting", "retry later") from None
        greeting = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
        if greeting_protocol(greeting) == "imap":
            raise mismatch_error(account, "imap", account.tls == "implicit") from None
        raise ProtocolError(f"{label}: bad greeting from {account.host}: {exc}",
                            "is this a POP3 server? check host and port") from None
    try:
        _login(client, account, secret, trace)
    except AuthError:
        _close_quietly(client)
        if not _retry_oauth or account.oauth2_client_id is None \
                or account.auth not in ("xoauth2", "oauthbearer"):
            raise
        # A refused OAuth2 token: refresh once more, then log in on a new connection.
        from mailsync import oauth
        return connect(account, oauth.token_after_refusal(account, secret), trace,
                       _retry_oauth=False)
    except MailsyncError:
        _close_quietly(client)
        raise
    client.sock.settimeout(account.timeout)
    return Pop3Session(account, client, trace)


def _open(account: Account) -> poplib.POP3:
    if account.tls == "implicit":
        return poplib.POP3_SSL(account.host, account.port, timeout=account.timeout,
                               context=tls_context(account))
    client = _PlainPOP3(account)
    if account.tls == "starttls":
        try:
            client.stls(tls_context(account))
        except poplib.error_proto:
            _close_quietly(client)
            raise UnreachableError(f"account {account.name}: {account.host} refused STARTTLS",
                                   "mailsync never falls back to plain text; use tls = "
                                   "\"implicit\" or ask the provider") from None
    return client


class _PlainPOP3(poplib.POP3):
    """A plain connection whose greeting is waited for only while the server could be
    a slow one: a port that expects TLS at once is named within seconds."""

    def __init__(self, account: Account) -> None:
        super().__init__(account.host, account.port, timeout=account.timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return plain_connection(self.host, self.port, timeout)


def _login(client: poplib.POP3, account: Account, secret: str, trace: Trace | None) -> None:
    label = f"account {account.name}"
    try:
        if account.auth == "login":
            if trace:
                trace("C", f"USER {account.user}")
            client.user(account.user)
            if trace:
                trace("C", "PASS <redacted>")
            client.pass_(secret)
        else:
            mechanism, response = sasl_initial_response(account.auth, account.user, secret)
            if trace:
                trace("C", f"AUTH {mechanism} <redacted>")
            reply = client._shortcmd(f"AUTH {mechanism} {response}")
            if not reply.startswith(b"+OK"):
                # "+ <base64 JSON>": an OAuth2 refusal as a SASL challenge (RFC 7628);
                # cancel the exchange so the server answers -ERR.
                if trace:
                    trace("S", "+ <challenge>")
                    trace("C", "*")
                try:
                    client._shortcmd("*")
                except poplib.error_proto:
                    pass
                from mailsync.oauth import refusal_hint
                raise AuthError(f"{label}: login as {account.user} failed (the server "
                                "refused the token)", refusal_hint(account, "")
                                or "check user and the token")
    except poplib.error_proto as exc:
        if exc.args and isinstance(exc.args[0], str):    # poplib's own words, not a reply
            if exc.args[0] == POPLIB_EOF:
                raise TemporaryError(f"{label}: the server closed the connection during "
                                     "login", "retry later") from None
            raise ProtocolError(f"{label}: broken reply during login: {exc.args[0]}",
                                "the server is misbehaving; report it to its admin") from None
        text = str(exc.args[0] if exc.args else exc)
        raw = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else text.encode()
        if any(code in raw for code in TEMPORARY_CODES):
            said = raw.decode("utf-8", "replace").replace(secret, "<redacted>") if secret \
                else raw.decode("utf-8", "replace")   # a server may echo the secret back
            raise TemporaryError(f"{label}: the mailbox is busy: {said}",
                                 "another client holds it; retry later") from None
        from mailsync.oauth import refusal_hint
        said = raw.decode("utf-8", "replace").replace(secret, "<redacted>") if secret \
            else raw.decode("utf-8", "replace")
        raise AuthError(f"{label}: login as {account.user} failed",
                        refusal_hint(account, said) or "check user and password") from None
    except (TimeoutError, socket.timeout):
        raise TemporaryError(f"{label}: the server did not answer the login in time",
                             "retry later") from None
    except OSError as exc:
        raise TemporaryError(f"{label}: connection lost during login: {exc}",
                             "retry later") from None


def sasl_initial_response(auth: str, user: str, secret: str) -> tuple[str, str]:
    """(mechanism, base64 initial response) for AUTH PLAIN, XOAUTH2 or OAUTHBEARER."""
    if auth == "plain":
        raw = f"\0{user}\0{secret}"
        mechanism = "PLAIN"
    elif auth == "xoauth2":
        raw = f"user={user}\x01auth=Bearer {secret}\x01\x01"
        mechanism = "XOAUTH2"
    else:
        raw = f"n,a={user},\x01auth=Bearer {secret}\x01\x01"
        mechanism = "OAUTHBEARER"
    return mechanism, base64.b64encode(raw.encode()).decode("ascii")


def _close_quietly(client: poplib.POP3) -> None:
    try:
        client.sock.close()
    except OSError:
        pass
