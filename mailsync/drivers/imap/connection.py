"""Connecting to an IMAP server: TLS (certificates always checked), STARTTLS without
fallback, login (password, XOAUTH2, OAUTHBEARER), the protocol trace with secrets
redacted, and every failure of these mapped to the contract's exit codes: unreachable
69, timeout or dropped connection 75, untrusted certificate or refused login 77, a
server that is not IMAP 65 (or 78: the other protocol on that port).

Secrets: the password or token is used once, during login, and never stored. The
trace redacts everything after LOGIN/AUTHENTICATE and any echo of the secret, and
login failures are reported with the server's text only.
"""

from __future__ import annotations

import ast
import imaplib
import socket
from typing import Callable

from imapclient import IMAPClient
from imapclient.imap4 import IMAP4WithTimeout
from imapclient.tls import IMAP4_TLS

from mailsync.config import Account
from mailsync.errors import (AuthError, ConfigError, MailsyncError, ProtocolError,
                             TemporaryError, UnreachableError)
from mailsync.headers import login_safe
from mailsync.drivers.imap.errors import (MAX_THROTTLE_WAIT, TEMPORARY_CODES, Throttled, clean,
                                  throttled)
from mailsync.drivers.imap.parse import redact
from mailsync.drivers.imap.session import ImapSession, close_quietly
from mailsync.secure import (connect_error, greeting_protocol, mismatch_error,
                             plain_connection, plain_greeting, tls_context)

Trace = Callable[[str, str], None]
MAX_PARSED_LITERAL = 64 << 20    # largest literal imaplib may hold (names, flags, headers)


def install_trace(client: IMAPClient, trace: Trace | None) -> None:
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


class BoundedReads:
    """imaplib reads a literal with one read(size), which allocates size bytes before a
    byte arrives: refuse an absurd size first. (Streamed bodies read in chunks.)"""

    def read(self, size: int) -> bytes:
        if size > MAX_PARSED_LITERAL:
            raise imaplib.IMAP4.abort(f"unexpected literal of {size} bytes")
        return super().read(size)


class _PlainIMAP4(BoundedReads, IMAP4WithTimeout):
    def _create_socket(self, timeout: float | None = None):
        # A port expecting TLS at once is named within seconds, not at the timeout.
        return plain_connection(self.host, self.port,
                                timeout if timeout is not None else self._timeout)


class _TlsIMAP4(BoundedReads, IMAP4_TLS):
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
            _retry_oauth: bool = True) -> ImapSession:
    """Connect, secure, log in; every failure mapped to the contract's exit codes."""
    label = f"account {account.name}"
    if account.tls == "none" and not account.allow_plaintext:
        raise ConfigError(f"{label}: tls = \"none\" needs allow_plaintext = true",
                          "use tls = \"starttls\" or \"implicit\"")
    plain_trace = trace
    if trace is not None and secret:
        trace = hiding(trace, secret)   # a server may echo the secret back
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
            raise throttled(label, "connecting", text) or TemporaryError(
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
        close_quietly(client)
        if not _retry_oauth or account.oauth2_client_id is None:
            raise
        from mailsync import oauth
        # A refused OAuth2 token: refresh once more (it may have expired or been
        # revoked early), then log in again on a new connection.
        fresh = oauth.token_after_refusal(account, secret)
        return connect(account, fresh, plain_trace, client_factory, _retry_oauth=False)
    except BaseException:
        close_quietly(client)
        raise


def waiting(attempt: Callable[[], ImapSession],
            sleep: Callable[[float], None] | None = None) -> ImapSession:
    """attempt() (a connect), waiting as a throttling server asks and trying again,
    MAX_THROTTLE_WAIT seconds in all; then its Throttled (exit 75) says when to retry."""
    import time
    waited = 0.0
    while True:
        try:
            return attempt()
        except Throttled as exc:
            if waited + exc.delay > MAX_THROTTLE_WAIT:
                raise
            (sleep or time.sleep)(exc.delay)
            waited += exc.delay


def hiding(trace: Trace, secret: str) -> Trace:
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
    install_trace(client, trace)
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
                                       f"STARTTLS: {clean(str(exc))}", "mailsync never "
                                       "falls back to plain text; use tls = \"implicit\" or "
                                       "ask the provider") from None
        except BaseException:
            close_quietly(client)
            raise
    return client


def _login(client: IMAPClient, account: Account, secret: str) -> None:
    label = f"account {account.name}"
    try:
        if account.auth == "xoauth2":
            client.oauth2_login(account.user, secret)
        elif account.auth == "oauthbearer":
            client.oauthbearer_login(account.user, secret)
        elif account.auth == "plain" or not login_safe(account.user + secret):
            client.plain_login(account.user, secret)   # UTF-8 and any character
        else:
            client.login(account.user, secret)
    except (TimeoutError, socket.timeout):
        raise TemporaryError(f"{label}: the server did not answer the login in time",
                             "retry later") from None
    except imaplib.IMAP4.error as exc:
        text = clean(str(exc))
        text = text.replace(secret, "<redacted>") if secret else text
        slow_down = throttled(label, "login", text)
        if slow_down is not None:
            raise slow_down from None
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
