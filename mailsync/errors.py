"""The error tree: every failure a user can see carries its exit code and a hint.

The CLI maps these to one line and the contract's exit status in one place; nothing
else decides exit codes.
"""

from __future__ import annotations

import errno

EX_OK = 0
EX_PARTIAL = 1
EX_USAGE = 64
EX_PROTOCOL = 65
EX_UNAVAILABLE = 69
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_AUTH = 77
EX_CONFIG = 78


class MailsyncError(Exception):
    """A failure with a user-facing message, a hint and an exit code."""

    exit_code = EX_PARTIAL

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(MailsyncError):
    exit_code = EX_USAGE


class ConfigError(MailsyncError):
    exit_code = EX_CONFIG


class ProtocolError(MailsyncError):
    """The server sent something that breaks the protocol."""

    exit_code = EX_PROTOCOL


class UnreachableError(MailsyncError):
    exit_code = EX_UNAVAILABLE


class LocalIOError(MailsyncError):
    exit_code = EX_IOERR


class TemporaryError(MailsyncError):
    """Retry later: timeouts, a busy mailbox, another run holding the lock."""

    exit_code = EX_TEMPFAIL


class LockedError(TemporaryError):
    pass


class AuthError(MailsyncError):
    exit_code = EX_AUTH


class CertificateError(AuthError):
    pass


class RefusedError(MailsyncError):
    """A folder refused by a safety guard; the rest of the run goes on."""

    exit_code = EX_PARTIAL


class Interrupted(MailsyncError):
    """SIGINT/SIGTERM: the run stopped cleanly after the message in flight."""

    exit_code = 130


def local_io_error(exc: OSError, what: str) -> LocalIOError:
    """Turn an OSError into a LocalIOError that names the path and the fix that fits."""
    path = exc.filename or what
    reason = exc.strerror or str(exc)
    return LocalIOError(f"cannot write {path}: {reason}", _IO_HINTS.get(
        exc.errno, "free disk space or fix the folder's permissions, then run again"))


_IO_HINTS = {
    errno.ENOSPC: "free disk space, then run again",
    errno.EDQUOT: "free space within your disk quota, then run again",
    errno.EACCES: "fix the folder's permissions (or its owner), then run again",
    errno.EPERM: "fix the folder's permissions (or its owner), then run again",
    errno.EROFS: "the file system is read-only: remount it read-write or point the "
                 "config elsewhere",
    errno.ENOTDIR: "a file is in the way of a folder: move it, or point maildir or "
                   "state_dir elsewhere",
    errno.EEXIST: "a file is in the way of a folder: move it, or point maildir or "
                  "state_dir elsewhere",
    errno.EISDIR: "a folder is where a file should be: move it away, then run again",
}


def naming_account(exc: MailsyncError, account: str) -> MailsyncError:
    """The error with the account named in front, unless its message already names it."""
    if f"account {account}" not in exc.message:
        exc.message = f"account {account}: {exc.message}"
    return exc
