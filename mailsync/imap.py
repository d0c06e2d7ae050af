"""IMAP adapter: the one module that talks to imapclient (and, below it, imaplib).

Everything it returns is a plain value defined here (frozen dataclasses, ints, strs,
Maildir flag letters); imapclient's bytes, dicts and exceptions never leave it. Every
failure is a MailsyncError carrying the contract's exit code, mapped like pop3.py:
unreachable 69, timeout or dropped connection 75, untrusted certificate or failed login
77, protocol garbage 65, a command the server refuses (NO) -> CommandRefused (exit 1,
the folder fails, the run goes on).

All message addressing is by UID. A UID set is sent at most MAX_SET_CHARS long; longer
lists are split into several commands. FETCH answers are filtered to the UIDs asked
for: an answer for a UID outside the request (an unsolicited flag update, the "n:*"
quirk) or without a UID is ignored, and a UID asked for but not answered is simply
absent from the result (expunged meanwhile) -- never an error. Malformed answers
(wrong types, missing items for a UID that was answered) raise ProtocolError.

Secrets: the password or token is used once, during login, and never stored. The
protocol trace redacts everything after LOGIN/AUTHENTICATE, and login failures are
reported with the server's text only.
"""

from __future__ import annotations

import ast
import imaplib
import re
import select
import socket
import ssl
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator

from mailsync import fastimport

fastimport.imapclient_without_metadata()   # before the first import of imapclient

from imapclient import IMAPClient  # noqa: E402
from imapclient import exceptions as imapclient_errors
from imapclient.datetime_util import parse_to_datetime
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.response_parser import parse_response
from imapclient.tls import IMAP4_TLS

from mailsync.config import Account
from mailsync.contracts import (CommandRefused, FolderStatus, Namespaces, RemoteMeta,  # noqa: F401
                                ServerFolder, Sink)
from mailsync.headers import login_safe as _login_safe, parse_message_id, searchable  # noqa: F401
from mailsync.errors import (EX_PARTIAL, AuthError, ConfigError, MailsyncError,
                             ProtocolError, TemporaryError, UnreachableError)
from mailsync.imapstream import FetchReader, StreamClosed, StreamError, crlf_to_lf
from mailsync.names import decode_mutf7, encode_mutf7
from mailsync.secure import (connect_error, greeting_protocol, mismatch_error,
                             plain_connection, plain_greeting, tls_context)

Trace = Callable[[str, str], None]

MAX_SET_CHARS = 8000             # longest UID set sent in one command
MAX_FOLDERS = 100_000            # a LIST longer than this is refused as garbage
MAX_NUMBER = (1 << 32) - 1       # UIDs, UIDVALIDITY, UIDNEXT, counts: 32 bits (RFC 3501)
MAX_NUMBER64 = (1 << 63) - 1     # RFC822.SIZE (RFC 9051 number64), mod-sequences (RFC 7162)
MAX_PARSED_LITERAL = 64 << 20    # largest literal imaplib may hold (names, flags, headers)
BODY_BATCH_COUNT = 200           # messages per body FETCH
BODY_BATCH_BYTES = 16 << 20      # bytes per body FETCH (a bigger message goes alone)
TEMPORARY_CODES = ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]")
# A provider's throttling answers (Gmail, Microsoft 365, Yahoo): wait, then retry.
THROTTLE_SIGNS = ("[THROTTLED]", "[OVERQUOTA]", "Suggested Backoff Time",
                  "Too many simultaneous connections", "[UNAVAILABLE]")
THROTTLE_WAIT = 5.0              # seconds waited when the server suggests no time
MAX_THROTTLE_WAIT = 60.0         # waited in all, per run, before giving up (exit 75)

# Maildir letter <-> IMAP flag, the only flags mailsync ever sets or clears.
LETTER_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                "S": "\\Seen", "T": "\\Deleted"}
_FLAG_LETTERS = {flag.lower(): letter for letter, flag in LETTER_FLAGS.items()}
_SESSION_FLAGS = {"\\recent"}    # per-session, not a property of the message


class Throttled(TemporaryError):
    """The server throttles this client (too many connections, commands or bytes):
    `delay` is the wait it suggests, in seconds."""

    def __init__(self, message: str, hint: str = "", delay: float = THROTTLE_WAIT) -> None:
        super().__init__(message, hint)
        self.delay = delay


def throttle_delay(text: str) -> float | None:
    """The wait a throttling answer asks for (its "Suggested Backoff Time: N ms", else
    THROTTLE_WAIT), or None when text is not a throttling answer."""
    if not any(sign.lower() in text.lower() for sign in THROTTLE_SIGNS):
        return None
    m = re.search(r"Suggested Backoff Time:\s*(\d+)\s*(ms|milliseconds|s)?", text, re.I)
    if m is None:
        return THROTTLE_WAIT
    value = int(m.group(1))
    return value / 1000 if (m.group(2) or "ms").lower() != "s" else float(value)


def _throttled(label: str, what: str, text: str) -> "Throttled | None":
    delay = throttle_delay(text)
    if delay is None:
        return None
    return Throttled(f"{label}: {what}: the server is throttling: {text}",
                     f"retry in {max(1, round(delay))} s or later", delay)


class MissingCapability(ProtocolError):
    """The server lacks an extension without which the operation is not safe."""


# Pure helpers ---------------------------------------------------------------------------

def flags_to_letters(flags: Iterable[bytes | str | int]) -> tuple[frozenset[str], frozenset[str]]:
    """IMAP flags -> (Maildir letters, other keywords). \\Recent is dropped."""
    letters, keywords = set(), set()
    for flag in flags:
        if isinstance(flag, bytes):
            flag = flag.decode("utf-8", "replace")
        elif isinstance(flag, int):      # imapclient parses an all-digit keyword as int
            flag = str(flag)
        elif not isinstance(flag, str):
            raise TypeError(f"flag must be bytes or str, not {type(flag).__name__}")
        low = flag.lower()
        if low in _FLAG_LETTERS:
            letters.add(_FLAG_LETTERS[low])
        elif low not in _SESSION_FLAGS and flag:
            keywords.add(flag)
    return frozenset(letters), frozenset(keywords)


def letters_to_flags(letters: Iterable[str]) -> list[str]:
    """Maildir letters -> IMAP flags in letter order; letters outside DFPRST are ignored."""
    return [LETTER_FLAGS[ch] for ch in sorted(set("".join(letters))) if ch in LETTER_FLAGS]


def lf_to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF; an existing CRLF is kept as it is, never doubled."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def uid_sets(uids: Iterable[int], limit: int = MAX_SET_CHARS) -> list[str]:
    """Sorted, de-duplicated UIDs as compact sets ("1:5,9"), each at most limit chars."""
    ordered = sorted(set(uids))
    if any(not isinstance(u, int) or isinstance(u, bool) or u <= 0 for u in ordered):
        raise ValueError("UIDs must be positive integers")
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    out, current = [], ""
    for run in runs:
        if current and len(current) + 1 + len(run) > limit:
            out.append(current)
            current = ""
        current = f"{current},{run}" if current else run
    if current:
        out.append(current)
    return out


_SET_RE = re.compile(r"(\d+|\*)(?::(\d+|\*))?(?:,(\d+|\*)(?::(\d+|\*))?)*")


def _set_ranges(text: str) -> list[tuple[int, float]]:
    """A UID set string -> inclusive (low, high) ranges.

    '*' is taken as unbounded, so "n:*" admits only UIDs >= n (not the RFC's "largest
    UID", which makes "n:*" return the last message even when its UID is below n)."""
    if not _SET_RE.fullmatch(text):
        raise ValueError(f"not a UID set: {text!r}")
    inf = float("inf")
    ranges = []
    for part in text.split(","):
        a, _, b = part.partition(":")
        ends = [inf if x == "*" else int(x) for x in (a, b or a)]
        finite = [e for e in ends if e != inf]
        lo = int(min(finite, default=1))
        hi = inf if inf in ends else max(ends)
        ranges.append((lo, hi))
    return ranges


def redact(line: str) -> str:
    """Cut everything after LOGIN or AUTHENTICATE from a client line."""
    m = re.search(r"\b(LOGIN|AUTHENTICATE)\b", line, re.IGNORECASE)
    return line if m is None else line[:m.end()] + " <redacted>"


def _to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, bytes):
        return None
    try:
        dt = parse_to_datetime(value, normalise=False)
        offset = dt.utcoffset()
        return dt.replace(tzinfo=timezone(offset) if offset is not None else timezone.utc)
    except (ValueError, OverflowError):     # e.g. day 2147483648, offset -65535
        return None


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _raw_name(folder: ServerFolder | str) -> str:
    if isinstance(folder, ServerFolder):
        return folder.raw
    return "INBOX" if folder.upper() == "INBOX" else encode_mutf7(folder)


# A FETCH answer made only of `KEY number`, `KEY (atoms)`, `KEY "plain string"` and
# `KEY NIL` items: the metadata of every message looks like this, and reading it with
# two regexes costs a tenth of imapclient's generic lexer and parser.
_SIMPLE_FETCH = re.compile(rb"(0|[1-9][0-9]*) \((.*)\)\Z", re.S)
_SIMPLE_ITEM = re.compile(
    rb"(?!NIL )([A-Za-z][A-Za-z0-9.]*) "
    rb"(?:(0|[1-9][0-9]*)(?![^ ])"                    # number
    rb"|\(([^\x00-\x1f()\"{}%\[\]]*)\)"            # list of atoms
    rb"|\"([^\x00-\x1f\"\\]*)\""                     # quoted string without escapes
    rb"|(NIL)(?![^ ]))")


def parse_fetch(raw: list) -> tuple:
    """imaplib's untagged FETCH data -> imapclient's parse_response() result.

    Lines of simple items are read by parse_simple_fetch; anything else (literals,
    nested lists, escaped strings) goes to imapclient's full parser."""
    simple = parse_simple_fetch(raw)
    return simple if simple is not None else parse_response(raw)


def parse_simple_fetch(raw: list) -> tuple | None:
    """The parse of lines made only of simple items (see _SIMPLE_ITEM), else None."""
    out: list[Any] = []
    item = _SIMPLE_ITEM.match
    for entry in raw:
        if not isinstance(entry, bytes):
            return None
        m = _SIMPLE_FETCH.match(entry)
        if m is None:
            return None
        body, pos, items = m.group(2), 0, []
        end = len(body)
        while pos < end:
            it = item(body, pos)
            if it is None:
                return None
            key, number, atoms, quoted, _nil = it.groups()
            items.append(key)
            if number is not None:
                items.append(int(number))
            elif atoms is not None:
                items.append(tuple(_simple_atom(a) for a in atoms.split(b" ") if a))
            elif quoted is not None:
                items.append(quoted)
            else:
                items.append(None)
            pos = it.end()
            if pos < end:
                if body[pos] != 0x20:
                    return None
                pos += 1
                if pos == end:
                    return None
        out += (int(m.group(1)), tuple(items))
    return tuple(out)


def _simple_atom(atom: bytes) -> bytes | int | None:
    """An atom inside a list, as imapclient reads it."""
    if atom == b"NIL":
        return None
    if atom.isdigit() and (atom[:1] != b"0" or len(atom) == 1):
        return int(atom)
    return atom


def _upper_keys(resp: dict) -> dict:
    return {k.upper() if isinstance(k, bytes) else k: v for k, v in resp.items()}


def _status_entry(entry: Any) -> tuple[str | None, dict]:
    """One untagged STATUS answer -> (the folder's raw name, {ITEM: value}); (None, {})
    when it cannot be read (that folder is then SELECTed as usual)."""
    try:
        parsed = parse_response([entry])
        name, items = parsed[0], parsed[1]
        if isinstance(name, int):
            name = str(name)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        if not isinstance(name, str) or not isinstance(items, tuple) or len(items) % 2:
            return None, {}
        return name, dict(zip(items[::2], items[1::2]))
    except (imapclient_errors.ProtocolError, ValueError, IndexError, TypeError):
        return None, {}


def _pairs(parsed: tuple) -> Iterator[tuple[Any, Any]]:
    if len(parsed) % 2:
        raise imapclient_errors.ProtocolError("odd FETCH response")
    for i in range(0, len(parsed), 2):
        yield parsed[i], parsed[i + 1]


# Trace --------------------------------------------------------------------------------

def _install_trace(client: IMAPClient, trace: Trace | None) -> None:
    """Route imaplib's debug output to trace (redacted), or switch it off entirely."""
    imap = client._imap
    imap._log = lambda line: None       # imaplib's in-memory log would keep LOGIN args
    if trace is None:
        imap.debug = 0
        imap._mesg = lambda s, secs=None: None
        return

    def mesg(s: str, secs: float | None = None) -> None:
        if s[:2] in ("> ", "< "):
            try:
                text = ast.literal_eval(s[2:]).decode("utf-8", "replace")
            except (ValueError, SyntaxError, AttributeError):
                text = s[2:]
            if s[0] == ">":
                trace("C", redact(text))
            else:
                trace("S", text)
        elif s.startswith("write literal size"):
            trace("C", f"<literal of {s.rsplit(' ', 1)[-1]} bytes>")
        elif s.startswith("read literal size"):
            trace("S", f"<literal of {s.rsplit(' ', 1)[-1]} bytes>")

    imap.debug = 4
    imap._mesg = mesg


# Connecting ---------------------------------------------------------------------------

class _BoundedReads:
    """imaplib reads a literal with one read(size), which allocates size bytes before a
    byte arrives: refuse an absurd size first. (Streamed bodies read in chunks.)"""

    def read(self, size: int) -> bytes:
        if size > MAX_PARSED_LITERAL:
            raise imaplib.IMAP4.abort(f"unexpected literal of {size} bytes")
        return super().read(size)


class _PlainIMAP4(_BoundedReads, IMAP4WithTimeout):
    def _create_socket(self, timeout: float | None = None):
        # A port expecting TLS at once is named within seconds, not at the timeout.
        return plain_connection(self.host, self.port,
                                timeout if timeout is not None else self._timeout)


class _TlsIMAP4(_BoundedReads, IMAP4_TLS):
    pass


class BoundedIMAPClient(IMAPClient):
    """IMAPClient on a connection that refuses absurd literals, the greeting's too."""

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _TlsIMAP4(self.host, self.port, self.ssl_context, timeout)
        return _PlainIMAP4(self.host, self.port, timeout)


def connect(account: Account, secret: str, trace: Trace | None = None,
            client_factory: Callable[..., IMAPClient] = BoundedIMAPClient,
            _retry_oauth: bool = True) -> "ImapSession":
    """Connect, secure, log in; every failure mapped to the contract's exit codes."""
    label = f"account {account.name}"
    if account.tls == "none" and not account.allow_plaintext:
        raise ConfigError(f"{label}: tls = \"none\" needs allow_plaintext = true",
                          "use tls = \"starttls\" or \"implicit\"")
    plain_trace = trace
    if trace is not None and secret:
        trace = _hiding(trace, secret)   # a server may echo the secret back
    client = None
    try:
        client = _open(account, trace, client_factory)
    except MailsyncError:
        raise
    except imaplib.IMAP4.error as exc:
        text = str(exc)[:200]
        if isinstance(exc, imaplib.IMAP4.abort) and "socket error" in text:
            raise TemporaryError(f"{label}: {account.host}:{account.port} dropped the "
                                 f"connection before its greeting: {text}",
                                 "retry later") from None
        if "BYE" in text:
            raise _throttled(label, "connecting", text) or TemporaryError(
                f"{label}: {account.host} turned the connection away: {text}",
                "retry later") from None
        implicit = account.tls == "implicit"
        if greeting_protocol(plain_greeting(account, tls=implicit)) == "pop3":
            raise mismatch_error(account, "pop3", implicit) from None
        raise ProtocolError(f"{label}: bad greeting from {account.host}: {text}",
                            "is this an IMAP server? check host and port") from None
    except OSError as exc:   # socket and TLS failures alike
        raise connect_error(account, exc) from None
    try:
        _login(client, account, secret)
        return ImapSession(account, client)
    except AuthError:
        _close_quietly(client)
        if not _retry_oauth or account.oauth2_client_id is None:
            raise
        from mailsync import oauth
        # A refused OAuth2 token: refresh once more (it may have expired or been
        # revoked early), then log in again on a new connection.
        fresh = oauth.token_after_refusal(account, secret)
        return connect(account, fresh, plain_trace, client_factory, _retry_oauth=False)
    except BaseException:
        _close_quietly(client)
        raise


def connect_waiting(account: Account, secret: str, trace: Trace | None = None,
                    sleep: Callable[[float], None] | None = None) -> "ImapSession":
    """connect(), waiting as a throttling server asks and trying again, MAX_THROTTLE_WAIT
    seconds in all; then its Throttled (exit 75) says when to retry."""
    import time
    waited = 0.0
    while True:
        try:
            return connect(account, secret, trace)
        except Throttled as exc:
            if waited + exc.delay > MAX_THROTTLE_WAIT:
                raise
            (sleep or time.sleep)(exc.delay)
            waited += exc.delay


def _hiding(trace: Trace, secret: str) -> Trace:
    """trace with every occurrence of secret, in either direction, redacted."""
    def hidden(direction: str, text: str) -> None:
        trace(direction, text.replace(secret, "<redacted>"))
    return hidden


def _open(account: Account, trace: Trace | None, factory: Callable[..., IMAPClient]
          ) -> IMAPClient:
    ctx = tls_context(account) if account.tls != "none" else None
    implicit = account.tls == "implicit"
    client = factory(account.host, account.port, ssl=implicit, ssl_context=ctx,
                     timeout=account.timeout)
    client.folder_encode = False         # names cross the wire raw; names.py decodes
    client.normalise_times = False
    _install_trace(client, trace)
    if trace:
        trace("S", (client.welcome or b"").decode("utf-8", "replace"))
    if account.tls == "starttls":
        try:
            if b"STARTTLS" not in client.capabilities():
                raise UnreachableError(f"account {account.name}: {account.host} does not "
                                       "offer STARTTLS", "mailsync never falls back to plain "
                                       "text; use tls = \"implicit\" or ask the provider")
            try:
                client.starttls(ctx)
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                raise UnreachableError(f"account {account.name}: {account.host} refused "
                                       f"STARTTLS: {_clean(str(exc))}", "mailsync never "
                                       "falls back to plain text; use tls = \"implicit\" or "
                                       "ask the provider") from None
        except BaseException:
            _close_quietly(client)
            raise
    return client


def _login(client: IMAPClient, account: Account, secret: str) -> None:
    label = f"account {account.name}"
    try:
        if account.auth == "xoauth2":
            client.oauth2_login(account.user, secret)
        elif account.auth == "oauthbearer":
            client.oauthbearer_login(account.user, secret)
        elif account.auth == "plain" or not _login_safe(account.user + secret):
            client.plain_login(account.user, secret)   # UTF-8 and any character
        else:
            client.login(account.user, secret)
    except (TimeoutError, socket.timeout):
        raise TemporaryError(f"{label}: the server did not answer the login in time",
                             "retry later") from None
    except imaplib.IMAP4.error as exc:
        text = _clean(str(exc))
        text = text.replace(secret, "<redacted>") if secret else text
        throttled = _throttled(label, "login", text)
        if throttled is not None:
            raise throttled from None
        if any(code in text for code in TEMPORARY_CODES):
            raise TemporaryError(f"{label}: the server cannot log in now: {text}",
                                 "retry later") from None
        abort = exc if isinstance(exc, imaplib.IMAP4.abort) else exc.__context__
        if isinstance(abort, imaplib.IMAP4.abort) and "unexpected" in str(abort):
            raise ProtocolError(f"{label}: the server broke the protocol during login: "
                                f"{text}", "report it to the server's admin") from None
        if isinstance(abort, imaplib.IMAP4.abort):
            raise TemporaryError(f"{label}: the server closed the connection during login: "
                                 f"{text}", "retry later") from None
        from mailsync.oauth import refusal_hint
        raise AuthError(f"{label}: login as {account.user} failed: {text}",
                        refusal_hint(account, text)
                        or "check user and password (or the token)") from None
    except OSError as exc:
        raise TemporaryError(f"{label}: connection lost during login: "
                             f"{getattr(exc, 'strerror', None) or exc}", "retry later") from None


def _close_quietly(client: IMAPClient | None) -> None:
    if client is None:
        return
    try:
        client.shutdown()
    except Exception:
        pass


# The session --------------------------------------------------------------------------

class ImapSession:
    """One logged-in IMAP connection; all message operations work on the selected folder."""

    def __init__(self, account: Account, client: IMAPClient) -> None:
        self.account = account
        self.label = f"account {account.name}"
        self._client = client
        self._imap = client._imap
        self._broken = False
        self._selected: str | None = None
        self._uidvalidity: dict[str, int] = {}
        self._listed_raw: dict[str, str] = {}   # name -> raw, for names not modified UTF-7
        with self._guard("CAPABILITY", flush=False):   # the login answer may carry them
            caps = client.capabilities()
        self.capabilities = frozenset(c.decode("ascii", "replace").upper()
                                      if isinstance(c, bytes) else str(c).upper() for c in caps)
        self.gmail = "X-GM-EXT-1" in self.capabilities   # labels as folders, X-GM-MSGID
        self.can_move = "MOVE" in self.capabilities
        self.condstore = False
        if "CONDSTORE" in self.capabilities and "ENABLE" in self.capabilities:
            self.condstore = self._enable("CONDSTORE")
        with self._guard("LIST"):
            rows = client.list_folders("", "")
        self.delimiter = _delimiter(rows[0][1]) if rows else None
        self.namespaces = self._namespaces() if "NAMESPACE" in self.capabilities \
            else Namespaces(delimiter=self.delimiter)

    def _namespaces(self) -> Namespaces:
        """The server's NAMESPACE answer; one that is refused or cannot be read counts as
        no namespace (every folder then is the user's, named as the server names it)."""
        with self._guard("NAMESPACE"):
            try:
                found = self._client.namespace()
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                return Namespaces(delimiter=self.delimiter)
            except (imapclient_errors.ProtocolError, ValueError, TypeError, IndexError):
                return Namespaces(delimiter=self.delimiter)
        try:
            entries = [[(_namespace_prefix(prefix), _delimiter(delim))
                        for prefix, delim in (group or ())] for group in tuple(found)[:3]]
        except (TypeError, ValueError):
            return Namespaces(delimiter=self.delimiter)
        personal = entries[0][0] if entries and entries[0] else ("", self.delimiter)
        others = tuple(e for group in entries[1:] for e in group if e[0]) + tuple(
            e for e in (entries[0][1:] if entries else []) if e[0])
        return Namespaces(personal[0], personal[1] or self.delimiter, others)

    def _enable(self, extension: str) -> bool:
        """ENABLE an extension; a server that refuses it just goes without."""
        with self._guard("ENABLE"):
            try:
                typ, _ = self._imap._simple_command("ENABLE", extension)
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                return False
            enabled = b" ".join(x for x in self._imap.untagged_responses.get("ENABLED", [])
                                if isinstance(x, bytes))
        return typ == "OK" and extension.encode() in enabled.upper().split()

    def __repr__(self) -> str:
        return f"<ImapSession {self.label} {self.account.host}:{self.account.port}>"

    # Error mapping ------------------------------------------------------------------------
    @contextmanager
    def _guard(self, what: str, flush: bool = True) -> Iterator[None]:
        if self._broken:
            raise TemporaryError(f"{self.label}: the connection was lost earlier",
                                 "run again")
        if flush:                         # stale answers must not leak into this one
            ur = self._imap.untagged_responses
            for key in [k for k in ur if k != "READ-ONLY"]:
                del ur[key]
        try:
            yield
        except MailsyncError:
            raise
        except (TimeoutError, socket.timeout):
            self._break()
            raise TemporaryError(f"{self.label}: the server did not answer {what} in time",
                                 "run again later, or raise timeout") from None
        except imaplib.IMAP4.readonly:
            raise CommandRefused(f"{self.label}: {what}: the folder is read-only",
                                 "mailsync needs write access to sync it") from None
        except imaplib.IMAP4.abort as exc:
            self._break()
            text = str(exc)[:200]
            if "unexpected" in text:
                raise ProtocolError(f"{self.label}: {what}: the server broke the protocol: "
                                    f"{text}", "report it to the server's admin") from None
            raise TemporaryError(f"{self.label}: {what}: the connection was lost: {text}",
                                 "run again") from None
        except UnicodeEncodeError:        # raised before anything was sent
            raise CommandRefused(f"{self.label}: {what}: an argument is not ASCII and "
                                 "cannot be sent", "rename the folder or message id") from None
        except (imapclient_errors.ProtocolError, ValueError) as exc:
            self._break()
            raise ProtocolError(f"{self.label}: {what}: malformed answer from the server: "
                                f"{str(exc)[:200]}", "report it to the server's admin") from None
        except (TypeError, AttributeError, IndexError, KeyError, OverflowError) as exc:
            if not _raised_by_parser(exc):
                raise                     # a bug of ours: not the server's fault
            self._break()
            raise ProtocolError(f"{self.label}: {what}: malformed answer from the server "
                                f"({type(exc).__name__}: {str(exc)[:200]})",
                                "report it to the server's admin") from None
        except imaplib.IMAP4.error as exc:
            raise self._refusal(what, str(exc)) from None
        except ssl.SSLError as exc:
            self._break()
            raise ProtocolError(f"{self.label}: {what}: TLS error: {exc.reason or exc}",
                                "run again; report it if it persists") from None
        except OSError as exc:
            self._break()
            raise TemporaryError(f"{self.label}: {what}: connection lost: "
                                 f"{exc.strerror or exc}", "run again") from None

    def _refusal(self, what: str, text: str) -> MailsyncError:
        text = _clean(text)
        throttled = _throttled(self.label, what, text)
        if throttled is not None:        # before BAD: Microsoft throttles with a BAD
            return throttled
        if " command error: BAD" in text or "got more than" in text or "illegal in state" in text:
            return ProtocolError(f"{self.label}: {what} rejected: {text}",
                                 "the server and mailsync disagree on the protocol; report it")
        if any(code in text for code in TEMPORARY_CODES):
            return TemporaryError(f"{self.label}: {what}: server busy: {text}", "retry later")
        return CommandRefused(f"{self.label}: {what} refused: {text}",
                              "see the server's reason")

    def _break(self) -> None:
        self._broken = True
        _close_quietly(self._client)

    @property
    def broken(self) -> bool:
        """The connection is lost or no longer usable (a refusal leaves it usable)."""
        return self._broken

    def _uid_command(self, name: str, *args: str, ok_codes: tuple[str, ...] = ()
                     ) -> tuple[str, list]:
        """Send UID <name> args; NO raises unless its text has one of ok_codes."""
        if self._selected is None:
            raise RuntimeError(f"UID {name} without a selected folder")
        tag = self._imap._command("UID", name, *args)
        typ, data = self._imap._command_complete("UID", tag)
        if typ != "OK":
            text = _text(data)
            if not any(code in text for code in ok_codes):
                raise imaplib.IMAP4.error(f"UID {name} failed: {text}")
        return typ, data

    # Folders ------------------------------------------------------------------------------
    def list_folders(self, with_status: bool = False) -> list[ServerFolder]:
        """Every folder; with_status and a server with LIST-STATUS (RFC 5819): each
        selectable one with its STATUS too, in the same round trip."""
        if with_status and "LIST-STATUS" in self.capabilities:
            return self._list_status()
        with self._guard("LIST"):
            rows = self._client.list_folders("", "*")
        return self._folders(rows)

    def _folders(self, rows: list) -> list[ServerFolder]:
        if len(rows) > MAX_FOLDERS:
            raise ProtocolError(f"{self.label}: the server listed more than {MAX_FOLDERS} "
                                "folders", "the server is misbehaving; report it")
        listed = [self._folder(row) for row in rows]
        for f in listed:
            if not f.name_ok:
                self.remember_raw(f.name, f.raw)
        return listed

    def remember_raw(self, name: str, raw: str) -> None:
        """Name the folder `name` on the wire as `raw`, as the server listed it (a name
        that is not modified UTF-7; raw 8-bit names are sent as the same UTF-8 bytes)."""
        try:
            if _raw_name(name) == raw:
                return
        except ValueError:
            pass
        self._listed_raw[name] = raw
        if not raw.isascii():
            self._imap._encoding = "utf-8"

    @staticmethod
    def unsendable(raw: str) -> bool:
        """A name that cannot be sent back: mailsync sends names as quoted strings, which
        cannot hold CR or LF, and no IMAP string holds NUL."""
        return any(c in raw for c in "\r\n\x00")

    def _raw(self, folder: ServerFolder | str) -> str:
        """The wire name: a listed folder's own spelling, else the name encoded."""
        if isinstance(folder, str) and folder in self._listed_raw:
            return self._listed_raw[folder]
        return _raw_name(folder)

    def _list_status(self) -> list[ServerFolder]:
        what = "MESSAGES UIDNEXT UIDVALIDITY" + (" HIGHESTMODSEQ" if self.condstore else "")
        with self._guard("LIST RETURN (STATUS)"):
            typ, data = self._imap._simple_command("LIST", '""', '"*"', "RETURN",
                                                   f"(STATUS ({what}))")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"LIST failed: {_text(data)}")
            statuses = self._imap.untagged_responses.pop("STATUS", [])
            typ, data = self._imap._untagged_response(typ, data, "LIST")
            parsed = parse_response([d for d in data if d not in (b"", None)] or [b""])
            rows = [parsed[i:i + 3] for i in range(0, len(parsed), 3)]
            by_raw = {}
            for entry in statuses:
                raw, values = _status_entry(entry)
                if raw is not None:
                    by_raw[raw] = values
        folders = self._folders(rows)
        return [replace(f, status=self._listed_status(by_raw[f.raw]))
                if f.selectable and f.raw in by_raw else f for f in folders]

    def _listed_status(self, resp: dict) -> FolderStatus | None:
        """A LIST-STATUS line's values as a FolderStatus; None when one is missing (the
        folder is then simply SELECTed)."""
        values = _upper_keys(resp)
        if any(values.get(k) is None for k in (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES")):
            return None
        return self._folder_status(values)

    def _folder(self, row: Any) -> ServerFolder:
        try:
            flags, delim, raw = row
            if isinstance(raw, int):
                raw = str(raw)
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "surrogateescape")
            if not isinstance(raw, str) or not isinstance(flags, tuple):
                raise TypeError
            flagset = frozenset(f.decode("ascii", "replace") if isinstance(f, bytes) else str(f)
                                for f in flags)
            delimiter = _delimiter(delim)
        except (TypeError, ValueError):
            raise ProtocolError(f"{self.label}: malformed LIST entry {row!r:.200}",
                                "the server is misbehaving; report it") from None
        try:
            name, ok = decode_mutf7(raw), True
        except ValueError:
            name, ok = raw, False
        if name.upper() == "INBOX":
            name = "INBOX"
        lower = {f.lower() for f in flagset}
        return ServerFolder(name=name, raw=raw, delimiter=delimiter, flags=flagset,
                            selectable=not lower & {"\\noselect", "\\nonexistent"},
                            name_ok=ok)

    def select(self, folder: ServerFolder | str, readonly: bool = False) -> FolderStatus:
        """SELECT (EXAMINE when readonly); CONDSTORE is enabled when the server has it."""
        raw = self._raw(folder)
        self._selected = None
        with self._guard(f"SELECT {raw}"):
            resp = self._client.select_folder(raw, readonly)
        self._selected = raw
        values = {k.upper() if isinstance(k, bytes) else k: v for k, v in resp.items()}
        uidvalidity = self._number(values.get(b"UIDVALIDITY"), "UIDVALIDITY", minimum=1)
        exists = self._number(values.get(b"EXISTS"), "EXISTS")
        if values.get(b"UIDNEXT") is not None:
            uidnext = self._number(values.get(b"UIDNEXT"), "UIDNEXT", minimum=1)
        else:
            with self._guard("FETCH"):
                found = self._uid_fetch("*", "(UID)") if exists else {}
            uidnext = max(found, default=0) + 1
        modseq = values.get(b"HIGHESTMODSEQ") if self.condstore else None
        status = FolderStatus(uidvalidity, uidnext, exists,
                              None if modseq is None else self._number(modseq, "HIGHESTMODSEQ",
                                                                 maximum=MAX_NUMBER64))
        self._uidvalidity[raw] = uidvalidity
        return status

    def status(self, folder: ServerFolder | str) -> FolderStatus:
        raw = self._raw(folder)
        what = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["HIGHESTMODSEQ"] if self.condstore
                                                         else [])
        with self._guard(f"STATUS {raw}"):
            resp = self._client.folder_status(raw, what)
        status = self._folder_status(_upper_keys(resp))
        self._uidvalidity[raw] = status.uidvalidity
        return status

    def _folder_status(self, values: dict) -> FolderStatus:
        """A STATUS answer's values (keys upper-case bytes); ProtocolError if malformed."""
        modseq = values.get(b"HIGHESTMODSEQ")
        return FolderStatus(
            uidvalidity=self._number(values.get(b"UIDVALIDITY"), "UIDVALIDITY", minimum=1),
            uidnext=self._number(values.get(b"UIDNEXT"), "UIDNEXT", minimum=1),
            exists=self._number(values.get(b"MESSAGES"), "MESSAGES"),
            highestmodseq=None if modseq is None else self._number(modseq, "HIGHESTMODSEQ",
                                                                   maximum=MAX_NUMBER64))

    def create_folder(self, name: str) -> None:
        """CREATE name (UTF-8, server delimiter), sent as modified UTF-7. Exists: fine."""
        raw = self._raw(name)
        with self._guard(f"CREATE {raw}"):
            try:
                self._client.create_folder(raw)
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort) or "[ALREADYEXISTS]" not in str(exc):
                    raise

    # Metadata -----------------------------------------------------------------------------
    def fetch_meta(self, uids: str | Iterable[int] = "1:*", with_message_id: bool = False,
                   with_date: bool = False) -> dict[int, RemoteMeta]:
        """Flags, size (MODSEQ; Message-ID, INTERNALDATE when asked) of the selected
        folder. The sync needs no dates: asking for them makes a Maildir server stat
        every message."""
        items = ["UID", "FLAGS", "RFC822.SIZE"] + (["INTERNALDATE"] if with_date else [])
        if self.condstore:
            items.append("MODSEQ")
        if self.gmail:
            items.append("X-GM-MSGID")
        if with_message_id:
            items.append("BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
        out: dict[int, RemoteMeta] = {}
        for uidset in self._sets(uids):
            with self._guard("FETCH"):
                answers = self._uid_fetch(uidset, "(" + " ".join(items) + ")")
            for uid, data in answers.items():
                out[uid] = self._meta(uid, data, with_message_id)
        return out

    def search_all(self) -> set[int]:
        """Every UID in the selected folder (UID SEARCH ALL)."""
        with self._guard("SEARCH"):
            self._uid_command("SEARCH", "ALL")
            answers = self._imap.untagged_responses.get("SEARCH", [])
        return {int(tok) for a in answers if isinstance(a, bytes)
                for tok in a.split(b"(")[0].split() if tok.isdigit() and int(tok) > 0}

    def fetch_changed(self, since_modseq: int) -> dict[int, RemoteMeta]:
        """Messages whose flags changed after since_modseq (CONDSTORE). Expunges are not
        reported here: compare the UID list (fetch_meta or a search) for those."""
        if not self.condstore:
            raise MissingCapability(f"{self.label}: the server lacks CONDSTORE",
                                    "use fetch_meta instead")
        items = "(UID FLAGS RFC822.SIZE MODSEQ" + (" X-GM-MSGID)" if self.gmail else ")")
        with self._guard("FETCH CHANGEDSINCE"):
            answers = self._uid_fetch("1:*", items, f"(CHANGEDSINCE {int(since_modseq)})")
        return {uid: self._meta(uid, data, False) for uid, data in answers.items()}

    def _meta(self, uid: int, data: dict[bytes, Any], with_message_id: bool) -> RemoteMeta:
        flags, size = data.get(b"FLAGS"), data.get(b"RFC822.SIZE")
        if not isinstance(flags, tuple) or not all(isinstance(f, (bytes, int)) for f in flags):
            self._garbage(f"FLAGS of UID {uid}", flags)
        if not self._number_ok(size, 0, MAX_NUMBER64):
            self._garbage(f"RFC822.SIZE of UID {uid}", size)
        letters, keywords = flags_to_letters(flags)
        modseq = data.get(b"MODSEQ")
        if (isinstance(modseq, tuple) and len(modseq) == 1
                and self._number_ok(modseq[0], 0, MAX_NUMBER64)):
            modseq = modseq[0]
        elif modseq is not None:
            self._garbage(f"MODSEQ of UID {uid}", modseq)
        message_id = None
        if with_message_id:
            header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER.FIELDS")),
                          None)
            if header is not None and not isinstance(header, bytes):
                self._garbage(f"Message-ID header of UID {uid}", header)
            message_id = parse_message_id(header)
        gm_msgid = data.get(b"X-GM-MSGID")
        if gm_msgid is not None and not self._number_ok(gm_msgid, 1, (1 << 64) - 1):
            self._garbage(f"X-GM-MSGID of UID {uid}", gm_msgid)
        return RemoteMeta(uid=uid, flags=letters, keywords=keywords, size=size,
                          internaldate=_to_datetime(data.get(b"INTERNALDATE"))
                          if b"INTERNALDATE" in data else None,
                          message_id=message_id, modseq=modseq, gm_msgid=gm_msgid)

    def _garbage(self, what: str, value: Any) -> None:
        raise ProtocolError(f"{self.label}: the server sent a malformed {what}: "
                            f"{value!r:.100}", "the server is misbehaving; report it")

    @staticmethod
    def _number_ok(value: Any, minimum: int, maximum: int = MAX_NUMBER) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and minimum <= value <= maximum)

    def _number(self, value: Any, what: str, minimum: int = 0,
                maximum: int = MAX_NUMBER) -> int:
        if not self._number_ok(value, minimum, maximum):
            self._garbage(what, value)
        return value

    def _sets(self, uids: str | Iterable[int]) -> list[str]:
        if isinstance(uids, str):
            _set_ranges(uids)            # validates
            return [uids]
        return uid_sets(uids)

    def _uid_fetch(self, uidset: str, items: str, modifiers: str | None = None
                   ) -> dict[int, dict[bytes, Any]]:
        """UID FETCH -> {uid: {ITEM: value}} for the UIDs inside uidset, in arrival order.

        Runs inside a _guard (which flushed older untagged answers). NO
        [EXPUNGEISSUED] still delivers what the server did send."""
        args = [uidset, items] + ([modifiers] if modifiers else [])
        self._uid_command("FETCH", *args, ok_codes=("[EXPUNGEISSUED]",))
        raw = self._imap.untagged_responses.pop("FETCH", [])
        parsed = parse_fetch(raw) if raw else ()
        ranges = _set_ranges(uidset)
        out: dict[int, dict[bytes, Any]] = {}
        for seq, attrs in _pairs(parsed):
            if not isinstance(seq, int) or not isinstance(attrs, tuple):
                raise imapclient_errors.ProtocolError(f"bad FETCH response {seq!r:.50}")
            entry: dict[bytes, Any] = {}
            for key, value in _pairs(attrs):
                if not isinstance(key, bytes):
                    raise imapclient_errors.ProtocolError(f"bad FETCH item {key!r:.50}")
                entry[key.upper()] = value
            uid = entry.get(b"UID")
            if uid is None:
                continue                 # an unsolicited update without UID: ignore
            if not self._number_ok(uid, 1):
                raise imapclient_errors.ProtocolError(f"bad UID {uid!r:.50}")
            if any(lo <= uid <= hi for lo, hi in ranges):
                out.setdefault(uid, {}).update(entry)
        return out

    # Bodies -------------------------------------------------------------------------------
    def fetch_bodies(self, uids: Iterable[int], sink_for: Callable[[int], Sink],
                     done: Callable[[int, int], None], headers_only: bool = False,
                     sizes: dict[int, int] | None = None) -> set[int]:
        """Download messages (BODY.PEEK: \\Seen is never set) with LF line endings.

        For each message that arrives: sink_for(uid).write(data), then done(uid, len).
        Batches hold at most BODY_BATCH_COUNT messages and about BODY_BATCH_BYTES (sizes
        from the argument, else asked for first). A UID the server no longer has is
        skipped. Returns the UIDs delivered."""
        wanted = sorted(set(uids))
        if not wanted:
            return set()
        known = dict(sizes or {})
        if not headers_only and any(u not in known for u in wanted):
            missing = [u for u in wanted if u not in known]
            for uidset in uid_sets(missing):
                with self._guard("FETCH"):
                    answers = self._uid_fetch(uidset, "(UID RFC822.SIZE)")
                for uid, data in answers.items():
                    known[uid] = self._number(data.get(b"RFC822.SIZE"), "RFC822.SIZE",
                                              maximum=MAX_NUMBER64)
            wanted = [u for u in wanted if u in known]
        section = b"BODY[HEADER]" if headers_only else b"BODY[]"
        items = "(UID BODY.PEEK[HEADER])" if headers_only else "(UID BODY.PEEK[])"
        delivered: set[int] = set()
        for batch in _batches(wanted, known, headers_only):
            for uidset in uid_sets(batch):
                if not headers_only:
                    delivered |= self._stream_bodies(uidset, set(batch), sink_for, done)
                    continue
                with self._guard("FETCH"):
                    answers = self._uid_fetch(uidset, items)
                for uid in list(answers):
                    body = answers.pop(uid).get(section)
                    if body is None:
                        continue         # answered without the body: gone meanwhile
                    if not isinstance(body, bytes):
                        self._garbage(f"body of UID {uid}", type(body).__name__)
                    data = crlf_to_lf(body)
                    del body
                    sink_for(uid).write(data)
                    done(uid, len(data))
                    delivered.add(uid)
        return delivered

    def _stream_bodies(self, uidset: str, wanted: set[int], sink_for: Callable[[int], Sink],
                       done: Callable[[int, int], None]) -> set[int]:
        """One UID FETCH of whole bodies, each streamed to its sink as it arrives."""
        delivered: set[int] = set()

        def counted(uid: int, nbytes: int) -> None:
            delivered.add(uid)
            done(uid, nbytes)

        with self._guard("FETCH"):
            tag = self._imap._command("UID", "FETCH", uidset, "(UID BODY.PEEK[])")
            try:
                status, text = FetchReader(self._imap.readline, self._imap.read, tag).run(
                    wanted, sink_for, counted)
            except StreamClosed as exc:
                self._break()
                raise TemporaryError(f"{self.label}: FETCH: the connection was lost: {exc}",
                                     "run again") from None
            except StreamError as exc:
                self._break()
                raise ProtocolError(f"{self.label}: FETCH: the server broke the protocol: "
                                    f"{exc}", "report it to the server's admin") from None
            except BaseException:
                self._break()   # mid-answer: the connection cannot be used any more
                raise
            finally:
                self._imap.tagged_commands.pop(tag, None)
            if status != b"OK" and b"[EXPUNGEISSUED]" not in text:
                raise imaplib.IMAP4.error(f"UID FETCH failed: {text.decode('utf-8', 'replace')}")
        return delivered

    # Changes ------------------------------------------------------------------------------
    def append(self, folder: ServerFolder | str, message: bytes,
               flags: Iterable[str] = frozenset(), internaldate: datetime | None = None
               ) -> int | None:
        """APPEND (CRLF line endings, mapped flags); the new UID from APPENDUID, or None
        when the server has no UIDPLUS or the folder's UIDVALIDITY is not the one known."""
        raw = self._raw(folder)
        with self._guard(f"APPEND {raw}"):
            reply = self._client.append(raw, lf_to_crlf(message), letters_to_flags(flags),
                                        internaldate)
        m = re.search(r"\[APPENDUID (\d+) (\d+)\]", _text([reply]), re.IGNORECASE)
        if m is None:
            return None
        validity, uid = int(m.group(1)), int(m.group(2))
        if self._uidvalidity.get(raw, validity) != validity or not 0 < uid <= MAX_NUMBER:
            return None
        return uid

    def find_by_message_id(self, message_id: str) -> list[int]:
        """UIDs in the selected folder whose Message-ID is exactly message_id.

        An empty or non-ASCII id finds nothing (it cannot be searched for safely)."""
        message_id = message_id.strip()
        if not searchable(message_id):
            return []
        with self._guard("SEARCH"):
            self._uid_command("SEARCH", "HEADER", "MESSAGE-ID", _quote(message_id))
            answers = self._imap.untagged_responses.get("SEARCH", [])
        found = sorted({int(tok) for a in answers if isinstance(a, bytes)
                        for tok in a.split(b"(")[0].split() if tok.isdigit() and int(tok) > 0})
        if not found:
            return []
        metas = self.fetch_meta(found, with_message_id=True)   # HEADER search is substring
        return [uid for uid in found if uid in metas and metas[uid].message_id == message_id]

    def add_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        self._store(uids, "+FLAGS.SILENT", letters_to_flags(letters))

    def remove_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        self._store(uids, "-FLAGS.SILENT", letters_to_flags(letters))

    def _store(self, uids: Iterable[int], op: str, flags: list[str]) -> None:
        if not flags:
            return
        for uidset in uid_sets(uids):
            with self._guard("STORE"):
                self._uid_command("STORE", uidset, op, "(" + " ".join(flags) + ")",
                                  ok_codes=("[EXPUNGEISSUED]",))

    def expunge(self, uids: Iterable[int]) -> set[int]:
        """Mark exactly these UIDs \\Deleted and expunge them (see expunge_marked);
        returns the UIDs left marked."""
        self.mark_deleted(uids)
        return self.expunge_marked(uids)

    def mark_deleted(self, uids: Iterable[int]) -> None:
        """The first half of expunge(): STORE +FLAGS \\Deleted on exactly these UIDs."""
        uids = sorted(set(uids))
        if uids:
            self._store(uids, "+FLAGS.SILENT", ["\\Deleted"])

    def expunge_marked(self, uids: Iterable[int]) -> set[int]:
        """The second half of expunge(): remove exactly these (marked) UIDs.

        With UIDPLUS, UID EXPUNGE of exactly them. Without it a plain EXPUNGE would also
        remove whatever other clients marked \\Deleted: it is sent only when no other
        message of the folder is marked (UID SEARCH DELETED); else nothing is expunged
        and these UIDs are returned, left marked for a later run."""
        uids = sorted(set(uids))
        if not uids:
            return set()
        if "UIDPLUS" in self.capabilities:
            for uidset in uid_sets(uids):
                with self._guard("UID EXPUNGE"):
                    self._uid_command("EXPUNGE", uidset)
            return set()
        if not self.expunge_is_exact(uids):
            return set(uids)
        with self._guard("EXPUNGE"):
            typ, data = self._imap._simple_command("EXPUNGE")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"EXPUNGE failed: {_text(data)}")
        return set()

    def expunge_is_exact(self, uids: Iterable[int]) -> bool:
        """Whether expunging these UIDs of the selected folder removes nothing else: with
        UIDPLUS always; without, when no other message there is marked \\Deleted."""
        if "UIDPLUS" in self.capabilities:
            return True
        with self._guard("SEARCH DELETED"):
            self._uid_command("SEARCH", "DELETED")
            answers = self._imap.untagged_responses.get("SEARCH", [])
        marked = {int(tok) for a in answers if isinstance(a, bytes)
                  for tok in a.split(b"(")[0].split() if tok.isdigit() and int(tok) > 0}
        return marked <= set(uids)

    def move(self, uids: Iterable[int], dest: ServerFolder | str) -> dict[int, int] | None:
        """UID MOVE (or UID COPY + expunge(): ask expunge_is_exact first without UIDPLUS);
        {old uid: new uid} from COPYUID, or None."""
        uids = sorted(set(uids))
        if not uids:
            return {}
        raw = self._raw(dest)
        has_move = "MOVE" in self.capabilities
        mapping: dict[int, int] = {}
        seen_copyuid = False
        for uidset in uid_sets(uids):
            with self._guard("MOVE" if has_move else "COPY"):
                self._uid_command("MOVE" if has_move else "COPY", uidset, _quote(raw))
                codes = [_text([c]) for c in self._imap.untagged_responses.get("COPYUID", [])]
            for text in codes:           # imaplib files [COPYUID ..] of OK lines here
                pairs = _copyuid(text)
                if pairs is not None:
                    seen_copyuid = True
                    mapping.update(pairs)
            if not has_move:
                self.expunge(_uids_in(uidset))
        return mapping if seen_copyuid else None

    # Waiting for changes (watch) ----------------------------------------------------------
    def notify_set(self, selected: bool = False) -> bool:
        """NOTIFY (RFC 5465) for every personal folder: new, expunged and re-flagged
        messages and new or renamed folders, reported while idle, so one connection
        watches them all; with selected, the selected folder's changes come as they do
        in IDLE (Dovecot 2.3 stops reporting other folders' after some hundreds of
        changes on one connection, never the selected one's). False when the server
        lacks NOTIFY or refuses the request."""
        if "NOTIFY" not in self.capabilities:
            return False
        imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))
        events = "(MessageNew MessageExpunge FlagChange)"
        spec = (f"(selected {events}) " if selected else "") + \
            "(personal (MessageNew MessageExpunge FlagChange MailboxName))"
        with self._guard("NOTIFY"):
            try:
                typ, _ = self._imap._simple_command("NOTIFY", "SET", spec)
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                return False
        return typ == "OK"

    def idle_start(self) -> None:
        """IDLE (RFC 2177) in the selected folder, or with NOTIFY in any state."""
        self._need("IDLE", "watch waits for the server's changes with IDLE")
        with self._guard("IDLE"):
            self._client.idle()

    def idle_wait(self, timeout: float) -> list[tuple[str, str | None]]:
        """What the server reported during IDLE within timeout seconds, as (what,
        folder) pairs: ("EXISTS", None), ("FETCH", None), ("STATUS", "Sent"), ("LIST",
        "New") ...; [] when nothing. A BYE (the server shutting down) raises
        TemporaryError like a dropped connection."""
        with self._guard("IDLE", flush=False):
            responses = self._idle_check(timeout)
            events = [_idle_event(r) for r in responses]
        if any(what == "BYE" for what, _ in events):
            self._break()
            raise TemporaryError(f"{self.label}: the server ended the connection (BYE)",
                                 "reconnect")
        return [e for e in events if e[0] != "OK"]

    def _idle_check(self, timeout: float) -> list:
        """The responses the server sent during IDLE, each read whole (literals too) on
        the socket as it is, blocking with the account's timeout once data is there.

        Not imapclient's idle_check: it reads a non-blocking TLS socket line by line,
        and a response split across TLS records loses its first part (the buffered
        reader drops it when the read raises "want read"); it also takes a closed
        connection for "nothing more to read" and would poll a dead socket."""
        from imapclient.imapclient import _parse_untagged_response
        sock = self._client.socket()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)

        def waiting(ms: int) -> bool:
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
            return pending > 0 or bool(poller.poll(ms))

        if not waiting(max(0, int(timeout * 1000))):
            return []
        responses = []
        while True:
            line = self._imap._get_response()   # EOF raises: the connection is gone
            if line is not None:
                try:
                    responses.append(_parse_untagged_response(line))
                except Exception:   # not one we can read: still a sign of change
                    responses.append((b"OTHER",))
            if not waiting(0):
                break
        ur = self._imap.untagged_responses   # read here, not kept: IDLE may last days
        for key in [k for k in ur if k != "READ-ONLY"]:
            del ur[key]
        return responses

    def idle_done(self) -> None:
        """End IDLE (DONE) and wait for its tagged answer."""
        with self._guard("DONE", flush=False):
            self._client.idle_done()

    def noop(self) -> None:
        with self._guard("NOOP"):
            self._client.noop()

    def _need(self, capability: str, why: str) -> None:
        if capability not in self.capabilities:
            raise MissingCapability(f"{self.label}: server lacks {capability}: {why}",
                                    "this server cannot be synced safely in this way")

    # Ending -------------------------------------------------------------------------------
    def logout(self) -> None:
        """LOGOUT, best effort: nothing is pending on an IMAP server at this point."""
        if self._broken:
            return
        self._broken = True
        try:
            self._client.logout()
        except Exception:
            pass
        _close_quietly(self._client)

    def abort(self) -> None:
        """Close the connection without LOGOUT."""
        self._broken = True
        _close_quietly(self._client)


# Small parsers --------------------------------------------------------------------------

def _idle_event(response: Any) -> tuple[str, str | None]:
    """One untagged response read during IDLE as (WHAT, folder or None)."""
    if not isinstance(response, tuple) or not response:
        return ("OTHER", None)
    first = response[0]
    if isinstance(first, int) and len(response) > 1 and isinstance(response[1], bytes):
        return (response[1].decode("ascii", "replace").upper(), None)   # 3 EXISTS, 2 FETCH
    what = first.decode("ascii", "replace").upper() if isinstance(first, bytes) else str(first)
    raw: Any = None
    if what == "STATUS" and len(response) > 1:
        raw = response[1]
    elif what == "LIST" and len(response) > 3:
        raw = response[3]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "surrogateescape")
    if isinstance(raw, int):
        raw = str(raw)
    if isinstance(raw, str):
        try:
            raw = decode_mutf7(raw)
        except ValueError:
            pass
        if raw.upper() == "INBOX":
            raw = "INBOX"
    return (what, raw if isinstance(raw, str) else None)


def _text(data: list) -> str:
    if not data:
        return ""
    item = data[-1] if data else b""
    if isinstance(item, tuple):
        item = item[0]
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return "" if item is None else str(item)


def _raised_by_parser(exc: BaseException) -> bool:
    """Whether exc comes from inside imapclient's or imaplib's parsing of an answer
    (such as int() of a tuple when a literal sits where a number belongs)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module == "imaplib" or module.startswith("imapclient")


def _clean(text: str) -> str:
    """An imaplib/imapclient error text as the server's words: no "x failed:", no b'..'."""
    text = re.sub(r"^[\w ]+ failed: ", "", text.strip())
    m = re.fullmatch(r"""b(['"])(.*)\1""", text, re.DOTALL)
    return (m.group(2) if m else text)[:300]


def _delimiter(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if not isinstance(value, str) or len(value) != 1:
        raise ValueError(f"bad hierarchy delimiter {value!r}")
    return value


def _namespace_prefix(value: Any) -> str:
    """A NAMESPACE prefix as a decoded name (raw when it is not modified UTF-7)."""
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
        raise TypeError("bad namespace prefix")
    try:
        return decode_mutf7(value)
    except ValueError:
        return value


def _uids_in(uidset: str) -> list[int]:
    out: list[int] = []
    for lo, hi in _set_ranges(uidset):
        if hi == float("inf"):
            raise ValueError("open UID range")
        out.extend(range(lo, int(hi) + 1))
    return out


def _copyuid(text: str) -> dict[int, int] | None:
    """The data of a COPYUID code, "validity src-set dst-set" -> {src uid: dst uid}."""
    m = re.fullmatch(r"\s*(\d+) ([\d:,]+) ([\d:,]+)\s*", text)
    if not m:
        return None
    src, dst = _uids_in_ordered(m.group(2)), _uids_in_ordered(m.group(3))
    if len(src) != len(dst):
        return None
    return dict(zip(src, dst))


def _uids_in_ordered(uidset: str) -> list[int]:
    """A COPYUID set in the order given (ranges may run downwards)."""
    out: list[int] = []
    for part in uidset.split(","):
        a, _, b = part.partition(":")
        lo, hi = int(a), int(b or a)
        step = 1 if hi >= lo else -1
        out.extend(range(lo, hi + step, step))
    return out


def _batches(uids: list[int], sizes: dict[int, int], headers_only: bool) -> Iterator[list[int]]:
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = 0 if headers_only else sizes.get(uid, 0)
        if batch and (len(batch) >= BODY_BATCH_COUNT or total + size > BODY_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch
