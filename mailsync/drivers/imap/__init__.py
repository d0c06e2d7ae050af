"""The IMAP driver: the one package that talks to imapclient (and, below it, imaplib).

Everything it returns is a plain value (mailsync.contracts' frozen dataclasses, ints,
strs, Maildir flag letters); imapclient's bytes, dicts and exceptions never leave it.
Every failure is a MailsyncError carrying the contract's exit code, mapped like pop3.py:
unreachable 69, timeout or dropped connection 75, untrusted certificate or failed login
77, protocol garbage 65, a command the server refuses (NO) -> CommandRefused (exit 1,
the folder fails, the run goes on).

By job:

- errors: imaplib's and imapclient's failures mapped to MailsyncErrors; throttling;
  the library boundary at which a parsing fault of theirs is told from a bug of ours.
- parse: pure response parsers and value conversions (flags, UID sets, LIST, STATUS).
- connection: TLS, STARTTLS, login, the redacting protocol trace.
- session: ImapSession, one logged-in connection and every command.
- stream: the streamed answer to a body FETCH, each body copied to its file in chunks.
- library: the private names of imaplib and imapclient the driver relies on.
- imapclient_version: imapclient imported without importlib.metadata (start-up time).

Callers use `from mailsync.drivers import imap` and the names below.
"""

from mailsync.drivers.imap import imapclient_version

imapclient_version.install()   # before the first import of imapclient, below

from mailsync.contracts import (CommandRefused, FolderStatus, Namespaces,  # noqa: E402
                                RemoteMeta, ServerFolder, Sink)
from mailsync.headers import parse_message_id, searchable  # noqa: E402
from mailsync.drivers.imap.connection import (MAX_PARSED_LITERAL, BoundedIMAPClient,  # noqa: E402
                                      BoundedReads, Trace, connect, install_trace,
                                      waiting)
from mailsync.drivers.imap.errors import (MAX_THROTTLE_WAIT, TEMPORARY_CODES,  # noqa: E402
                                  THROTTLE_SIGNS, THROTTLE_WAIT, MissingCapability,
                                  Throttled, throttle_delay)
from mailsync.drivers.imap.parse import (LETTER_FLAGS, MAX_FOLDERS, MAX_NUMBER,  # noqa: E402
                                 MAX_NUMBER64, MAX_SET_CHARS, copyuid, flags_to_letters,
                                 letters_to_flags, lf_to_crlf, parse_fetch,
                                 parse_simple_fetch, redact, set_ranges, uid_sets)
from mailsync.drivers.imap.session import (BODY_BATCH_BYTES, BODY_BATCH_COUNT,  # noqa: E402
                                   ImapSession)
from mailsync.drivers.imap.stream import crlf_to_lf  # noqa: E402
from imapclient.response_parser import parse_response  # noqa: E402

# The names tests knew before the split into modules.
_set_ranges, _copyuid, _install_trace = set_ranges, copyuid, install_trace
_BoundedReads = BoundedReads


def connect_waiting(account, secret: str, trace: Trace | None = None,
                    sleep=None) -> ImapSession:
    """connect(), waiting as a throttling server asks and trying again (see
    connection.waiting). It calls this package's connect, the one callers see."""
    return waiting(lambda: connect(account, secret, trace), sleep)


__all__ = [
    "BODY_BATCH_BYTES", "BODY_BATCH_COUNT", "LETTER_FLAGS", "MAX_FOLDERS", "MAX_NUMBER",
    "MAX_NUMBER64", "MAX_PARSED_LITERAL", "MAX_SET_CHARS", "MAX_THROTTLE_WAIT",
    "TEMPORARY_CODES", "THROTTLE_SIGNS", "THROTTLE_WAIT", "BoundedIMAPClient", "BoundedReads",
    "CommandRefused", "FolderStatus", "ImapSession", "MissingCapability", "Namespaces",
    "RemoteMeta", "ServerFolder", "Sink", "Throttled", "Trace", "connect",
    "connect_waiting", "crlf_to_lf", "flags_to_letters", "letters_to_flags", "lf_to_crlf",
    "parse_fetch", "parse_message_id", "parse_response", "parse_simple_fetch", "redact",
    "searchable", "throttle_delay", "uid_sets",
]
