"""What both protocol adapters share about opening a connection: the TLS context
(certificates and host names always checked) and the meaning of a failure to connect."""

from __future__ import annotations

import os
import re
import socket
import ssl

from mailsync.config import Account
from mailsync.errors import (CertificateError, MailsyncError, TemporaryError,
                             UnreachableError)


_HASHED_CA = re.compile(r"[0-9a-f]{8}\.\d+\Z")


def tls_context(account: Account) -> ssl.SSLContext:
    """System trust plus the account's ca_file; certificates and names always checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED, check_hostname
    _load_system_trust(ctx)
    if account.ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(account.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"account {account.name}: cannot load ca_file "
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
    """The contract's error for a socket or TLS failure while connecting."""
    label, where = f"account {account.name}", f"{account.host}:{account.port}"
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
        return UnreachableError(f"{label}: no TLS session with {where}: "
                                f"{exc.reason or exc}",
                                "check port and tls (implicit or starttls) in the config")
    return UnreachableError(f"{label}: cannot reach {where}: "
                            f"{getattr(exc, 'strerror', None) or exc}",
                            "check host, port and network")
