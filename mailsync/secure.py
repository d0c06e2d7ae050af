"""What both protocol adapters share about opening a connection: the TLS context
(certificates and host names always checked) and the meaning of a failure to connect."""

from __future__ import annotations

import os
import re
import select
import socket
import ssl
import threading
import time

from mailsync.config import Account
from mailsync.errors import (CertificateError, ConfigError, MailsyncError, TemporaryError,
                             UnreachableError)


_HASHED_CA = re.compile(r"[0-9a-f]{8}\.\d+\Z")
GREETING_WAIT = 2.0     # a plain-text server greets at once; a TLS port says nothing
PROBE_TIMEOUT = 3.0
PLAIN_PORTS = {"pop3": 110, "imap": 143}
TLS_PORTS = {"pop3": 995, "imap": 993}


_CONTEXTS: dict[tuple, ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def tls_context(account: Account) -> ssl.SSLContext:
    """System trust plus the account's ca_file; certificates and names always checked.

    One context per trust setting for the whole process: building one costs OpenSSL
    memory that a long `watch` (a connection per pass) would otherwise grow by some
    KB per pass. A changed ca_file, or SSL_CERT_FILE/SSL_CERT_DIR, gives a new one."""
    key = _trust_key(account)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ctx = _new_tls_context(account)
            if len(_CONTEXTS) >= 16:
                _CONTEXTS.clear()
            _CONTEXTS[key] = ctx
        return ctx


def _trust_key(account: Account) -> tuple:
    """What the context's trust is read from, with each file's or directory's stamp (a
    CA added to the hashed directory changes it)."""
    paths = ssl.get_default_verify_paths()
    cafile = os.environ.get(paths.openssl_cafile_env)
    capath = os.environ.get(paths.openssl_capath_env) or paths.capath
    return tuple((str(p), _stamp(p)) for p in (account.ca_file, cafile, capath)) + (
        cafile is None,)


def _stamp(path) -> tuple | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _new_tls_context(account: Account) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED, check_hostname
    _load_system_trust(ctx)
    if account.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(account.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"account {account.name}: cannot load ca_file "
                              f"{account.ca_file}: {exc}",
                              "point ca_file at a PEM CA bundle") from None
    return ctx


def _load_system_trust(ctx: ssl.SSLContext) -> None:
    """The system's CAs. Where they also exist as a hashed directory (c_rehash, as
    Debian's, Alpine's and Arch's ca-certificates make), only that directory is given
    to OpenSSL, which then reads just the CAs a server's chain names; the default
    parses the whole bundle file at every start (16 ms, an eighth of a no-op sync).
    SSL_CERT_DIR names the directory as for OpenSSL; with SSL_CERT_FILE set, or no
    hashed directory, the default (that file is then read, as asked)."""
    paths = ssl.get_default_verify_paths()
    capath = os.environ.get(paths.openssl_capath_env) or paths.capath
    if not os.environ.get(paths.openssl_cafile_env) and capath and _is_hashed_dir(capath):
        ctx.load_verify_locations(capath=capath)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)


def _is_hashed_dir(path: str) -> bool:
    try:
        return any(_HASHED_CA.match(name) for name in os.listdir(path))
    except OSError:
        return False


def connect_error(account: Account, exc: OSError) -> MailsyncError:
    """The contract's error for a socket or TLS failure while connecting. A TLS
    handshake that met plain text looks at the server's greeting (one more short
    connection) to name the setting to change."""
    label, where = f"account {account.name}", f"{account.host}:{account.port}"
    if isinstance(exc, ExpectsTls):
        return mismatch_error(account, account.protocol, tls_answered=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(f"{label}: the certificate of {account.host} is not "
                                f"trusted: {exc.verify_message}",
                                "set ca_file to the CA that signed it, or fix the host name")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return TemporaryError(f"{label}: {where} did not answer in time",
                              "check the host and port, or retry later")
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError,
                        ConnectionAbortedError, BrokenPipeError)):
        return TemporaryError(f"{label}: {where} dropped the connection while it was "
                              "being set up", "retry later")
    if isinstance(exc, ssl.SSLError):
        # Implicit TLS that met plain text: what the server greets with names the fix.
        spoke = greeting_protocol(plain_greeting(account)) \
            if account.tls == "implicit" and _not_tls(exc) else None
        if spoke is not None:
            return mismatch_error(account, spoke, tls_answered=False)
        return UnreachableError(f"{label}: no TLS session with {where}: "
                                f"{exc.reason or exc}",
                                "check port and tls (implicit or starttls) in the config")
    return UnreachableError(f"{label}: cannot reach {where}: "
                            f"{getattr(exc, 'strerror', None) or exc}",
                            "check host, port and network")


# Telling a wrong port or tls setting apart from a dead server, in seconds ---------------

class ExpectsTls(OSError):
    """A plain-text connection met a server that waits for a TLS handshake."""


def plain_connection(host: str, port: int, timeout: float | None) -> socket.socket:
    """A plain TCP connection for tls = "starttls" or "none" that has its greeting
    waiting, or a quick answer why not: a port of implicit TLS says nothing until the
    client's TLS hello, so a silent server is probed for TLS on a second connection
    instead of being waited for until the timeout."""
    sock = socket.create_connection((host, port), timeout)
    try:
        wait = min(GREETING_WAIT, timeout or GREETING_WAIT)
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready and speaks_tls(host, port):
            raise ExpectsTls(f"{host}:{port} expects TLS at once")
    except BaseException:
        sock.close()
        raise
    return sock


def speaks_tls(host: str, port: int) -> bool:
    """Whether the server completes a TLS handshake (nothing is sent after it; the
    certificate is not checked, as nothing secret crosses this connection)."""
    try:
        with socket.create_connection((host, port), PROBE_TIMEOUT) as raw:
            with _probe_context().wrap_socket(raw, server_hostname=host):
                return True
    except (OSError, ValueError):
        return False


def _probe_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def plain_greeting(account: Account, tls: bool = False) -> bytes:
    """The first bytes the server sends on a plain (or, with tls, an unverified TLS)
    connection; b"" if none in time."""
    try:
        with socket.create_connection((account.host, account.port), PROBE_TIMEOUT) as raw:
            sock = _probe_context().wrap_socket(raw, server_hostname=account.host) \
                if tls else raw
            deadline = time.monotonic() + PROBE_TIMEOUT
            data = b""
            while b"\n" not in data and len(data) < 512:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = sock.recv(512)
                if not chunk:
                    break
                data += chunk
            return data
    except (OSError, ValueError):
        return b""


def greeting_protocol(greeting: bytes | None) -> str | None:
    """"pop3" or "imap" from a server's first line, else None."""
    if not greeting:
        return None
    if greeting.startswith(b"+OK"):
        return "pop3"
    if greeting[:9].upper().startswith((b"* OK", b"* PREAUTH", b"* BYE")):
        return "imap"
    return None


def _not_tls(exc: ssl.SSLError) -> bool:
    # What OpenSSL says when the bytes it reads as a TLS record are plain text.
    reason = (exc.reason or str(exc)).upper()
    return any(word in reason for word in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE",
                                           "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL",
                                           "HTTP_REQUEST"))


def mismatch_error(account: Account, spoke: str, tls_answered: bool | None) -> ConfigError:
    """The server at host:port speaks `spoke` (and TLS at once when tls_answered, plain
    text when False): say what in the config is wrong and the setting that fixes it."""
    label, where = f"account {account.name}", f"{account.host}:{account.port}"
    other = "imap" if account.protocol == "pop3" else "pop3"
    name = {"pop3": "POP3", "imap": "IMAP"}
    if spoke == other:
        how = "" if tls_answered is None else \
            " with implicit TLS" if tls_answered else " in plain text"
        article = "an" if other == "imap" else "a"
        return ConfigError(
            f"{label}: {where} is {article} {name[other]} server{how}, but protocol = "
            f"\"{account.protocol}\"", f"use the {name[account.protocol]} port: "
            f"{TLS_PORTS[account.protocol]} with tls = \"implicit\" or "
            f"{PLAIN_PORTS[account.protocol]} with tls = \"starttls\"; or set protocol = "
            f"\"{other}\" if this is the account you meant")
    if tls_answered:
        return ConfigError(
            f"{label}: {where} expects TLS at once (implicit TLS), but tls = "
            f"\"{account.tls}\" waits for a plain-text greeting",
            f"set tls = \"implicit\" for this port, or use port "
            f"{PLAIN_PORTS[account.protocol]} with tls = \"{account.tls}\"")
    return ConfigError(
        f"{label}: {where} answered in plain text, not TLS, but tls = \"implicit\"",
        f"set tls = \"starttls\" for this port, or use port "
        f"{TLS_PORTS[account.protocol]} with tls = \"implicit\"")
