"""imaplib's and imapclient's failures as MailsyncErrors with the contract's exit codes.

Mapped like pop3.py: a timeout or a dropped connection 75 (retry later), a broken answer
65, a command the server refuses (NO) CommandRefused (exit 1: the folder fails, the run
goes on), a server's busy or throttling answer 75. Connecting and login have their own
mapping (connection.py): unreachable 69, untrusted certificate or refused login 77.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
from contextlib import contextmanager
from functools import wraps
from typing import Any, Callable, Iterator

from imapclient import exceptions as imapclient_errors

from mailsync.contracts import CommandRefused
from mailsync.errors import MailsyncError, ProtocolError, TemporaryError

TEMPORARY_CODES = ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]")
# A provider's throttling answers (Gmail, Microsoft 365, Yahoo): wait, then retry.
THROTTLE_SIGNS = ("[THROTTLED]", "[OVERQUOTA]", "Suggested Backoff Time",
                  "Too many simultaneous connections", "[UNAVAILABLE]")
THROTTLE_WAIT = 5.0              # seconds waited when the server suggests no time
MAX_THROTTLE_WAIT = 60.0         # waited in all, per run, before giving up (exit 75)


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


def throttled(label: str, what: str, text: str) -> "Throttled | None":
    delay = throttle_delay(text)
    if delay is None:
        return None
    return Throttled(f"{label}: {what}: the server is throttling: {text}",
                     f"retry in {max(1, round(delay))} s or later", delay)


class MissingCapability(ProtocolError):
    """The server lacks an extension without which the operation is not safe."""


def clean(text: str) -> str:
    """An imaplib/imapclient error text as the server's words: no "x failed:", no b'..'."""
    text = re.sub(r"^[\w ]+ failed: ", "", text.strip())
    m = re.fullmatch(r"""b(['"])(.*)\1""", text, re.DOTALL)
    return (m.group(2) if m else text)[:300]


# The library boundary ------------------------------------------------------------------

LIBRARY_FAULTS = (TypeError, AttributeError, IndexError, KeyError, OverflowError)


class MalformedAnswer(imapclient_errors.ProtocolError):
    """imaplib or imapclient choked on an answer (such as int() of a tuple where a
    literal stands for a number): the server's fault, exit 65."""


def from_library(function: Callable[..., Any]) -> Callable[..., Any]:
    """function, one of imaplib's or imapclient's, with the faults its parsing raises on
    a malformed answer turned into MalformedAnswer. The same exceptions raised by
    mailsync's own code are bugs and stay what they are."""
    @wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except LIBRARY_FAULTS as exc:
            raise MalformedAnswer(f"{type(exc).__name__}: {exc}") from exc
    return call


class LibraryCalls:
    """An imapclient IMAPClient or imaplib IMAP4 whose every method is called through
    from_library; other attributes are read and set on the object itself."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        return from_library(value) if callable(value) and not isinstance(value, type) \
            else value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)


# A command's failure -------------------------------------------------------------------

@contextmanager
def command_errors(label: str, what: str, lost: Callable[[], None]) -> Iterator[None]:
    """Map what the libraries raise while `what` runs to a MailsyncError; lost() is
    called first when the connection cannot be used any more."""
    try:
        yield
    except MailsyncError:
        raise
    except (TimeoutError, socket.timeout):
        lost()
        raise TemporaryError(f"{label}: the server did not answer {what} in time",
                             "run again later, or raise timeout") from None
    except imaplib.IMAP4.readonly:
        raise CommandRefused(f"{label}: {what}: the folder is read-only",
                             "mailsync needs write access to sync it") from None
    except imaplib.IMAP4.abort as exc:
        lost()
        text = str(exc)[:200]
        if "unexpected" in text:
            raise ProtocolError(f"{label}: {what}: the server broke the protocol: "
                                f"{text}", "report it to the server's admin") from None
        raise TemporaryError(f"{label}: {what}: the connection was lost: {text}",
                             "run again") from None
    except UnicodeEncodeError:        # raised before anything was sent
        raise CommandRefused(f"{label}: {what}: an argument is not ASCII and "
                             "cannot be sent", "rename the folder or message id") from None
    except MalformedAnswer as exc:
        lost()
        raise ProtocolError(f"{label}: {what}: malformed answer from the server "
                            f"({str(exc)[:200]})", "report it to the server's admin") from None
    except (imapclient_errors.ProtocolError, ValueError) as exc:
        lost()
        raise ProtocolError(f"{label}: {what}: malformed answer from the server: "
                            f"{str(exc)[:200]}", "report it to the server's admin") from None
    except imaplib.IMAP4.error as exc:
        raise refusal(label, what, str(exc)) from None
    except ssl.SSLError as exc:
        lost()
        raise ProtocolError(f"{label}: {what}: TLS error: {exc.reason or exc}",
                            "run again; report it if it persists") from None
    except OSError as exc:
        lost()
        raise TemporaryError(f"{label}: {what}: connection lost: "
                             f"{exc.strerror or exc}", "run again") from None


def refusal(label: str, what: str, text: str) -> MailsyncError:
    """The error for a command the server refused (NO, BAD) with text."""
    text = clean(text)
    slow_down = throttled(label, what, text)
    if slow_down is not None:        # before BAD: Microsoft throttles with a BAD
        return slow_down
    if " command error: BAD" in text or "got more than" in text or "illegal in state" in text:
        return ProtocolError(f"{label}: {what} rejected: {text}",
                             "the server and mailsync disagree on the protocol; report it")
    if any(code in text for code in TEMPORARY_CODES):
        return TemporaryError(f"{label}: {what}: server busy: {text}", "retry later")
    return CommandRefused(f"{label}: {what} refused: {text}", "see the server's reason")
