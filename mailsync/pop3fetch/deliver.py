"""POP3 delivery through an MDA (deliver = "mda") or an LMTP server (deliver = "lmtp").

A message counts as delivered only when the MDA exits 0 or the LMTP server accepts it
after DATA; fetch.py then records its UIDL and only later sends DELE. A message the
MDA or server refuses stays on the server for the next run; the others go on. What
makes every later message fail too (an MDA that cannot be started, an LMTP server that
cannot be reached or hangs up) stops the run at once.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import smtplib
import socket
import subprocess
from dataclasses import dataclass

from mailsync.config import Account
from mailsync.errors import ConfigError, LocalIOError, MailsyncError, TemporaryError

EX_TEMPFAIL = 75            # sysexits: an MDA's "try again later"
NOT_RUNNABLE = (126, 127)   # the shell's "cannot execute" and "command not found"
_RETURN_PATH = re.compile(rb"^Return-Path:[ \t]*<([^<>\r\n]*)>", re.I | re.M)


@dataclass
class Refusal:
    number: int
    reason: str
    temporary: bool


def envelope_sender(data: bytes) -> str:
    """The sender the message names in its Return-Path header, else the null sender."""
    head = data.split(b"\n\n", 1)[0]
    m = _RETURN_PATH.search(head)
    try:
        return m.group(1).decode("ascii") if m else ""
    except UnicodeDecodeError:
        return ""


class Deliverer:
    """Hands messages to the MDA or LMTP server; collects the ones refused."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.label = f"account {account.name}"
        self.refusals: list[Refusal] = []

    def deliver(self, number: int, data: bytes) -> bool:
        """True once the message is accepted; False (and recorded) when refused."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def refused(self, number: int, reason: str, temporary: bool) -> bool:
        self.refusals.append(Refusal(number, reason, temporary))
        return False

    def refusal_error(self) -> MailsyncError | None:
        """The account's error for the messages refused, after the rest were delivered."""
        if not self.refusals:
            return None
        first = self.refusals[0]
        what = "the MDA" if self.account.deliver == "mda" else "the LMTP server"
        message = (f"{self.label}: {len(self.refusals)} message(s) refused by {what} and "
                   f"left on the server; message {first.number}: {first.reason}")
        if all(r.temporary for r in self.refusals):
            return TemporaryError(message, "they are delivered again on the next run")
        return LocalIOError(message, f"fix what {what} objects to; the messages stay on the "
                                     "server until it accepts them")


class MdaDeliverer(Deliverer):
    """mda_command with the message on its stdin: exit 0 is acceptance."""

    def deliver(self, number: int, data: bytes) -> bool:
        command = self.account.mda_command or ""
        env = {**os.environ, "MAILSYNC_ACCOUNT": self.account.name,
               "MAILSYNC_SENDER": envelope_sender(data)}
        try:
            done = subprocess.run(command, shell=True, input=data, capture_output=True,
                                  env=env)
        except OSError as exc:
            raise ConfigError(f"{self.label}: mda_command could not be started: "
                              f"{exc.strerror or exc}", "fix mda_command in the config; "
                              "nothing was deleted on the server") from None
        if done.returncode == 0:
            return True
        said = next((ln.strip() for ln in done.stderr.decode("utf-8", "replace").splitlines()
                     if ln.strip()), "")[:300]
        why = (f"exit status {done.returncode}" if done.returncode > 0 else
               f"killed by signal {-done.returncode}") + (f": {said}" if said else "")
        if done.returncode in NOT_RUNNABLE:
            raise ConfigError(f"{self.label}: mda_command cannot run ({why})",
                              "fix mda_command in the config; nothing was deleted on the "
                              "server")
        return self.refused(number, why, temporary=done.returncode == EX_TEMPFAIL)


class LmtpDeliverer(Deliverer):
    """One LMTP session (TCP host:port or a unix socket) for the run's messages."""

    def __init__(self, account: Account) -> None:
        super().__init__(account)
        self.recipient = account.lmtp_recipient or getpass.getuser()
        self.conn: smtplib.LMTP | None = None

    def _connect(self) -> smtplib.LMTP:
        address = self.account.lmtp_address or ""
        try:
            if address.startswith("/"):
                conn = smtplib.LMTP(address, timeout=self.account.timeout)
            else:
                host, _, port = address.rpartition(":")
                conn = smtplib.LMTP(host, int(port), timeout=self.account.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryError(f"{self.label}: cannot reach the LMTP server at {address}: "
                                 f"{getattr(exc, 'strerror', None) or exc}",
                                 "check lmtp_address and that the server runs; nothing was "
                                 "deleted on the server") from None
        return conn

    def deliver(self, number: int, data: bytes) -> bool:
        if self.conn is None:
            self.conn = self._connect()
        try:
            # Stored with LF line ends (as from POP3, CRLF turned to LF): CRLF on the wire.
            self.conn.sendmail(envelope_sender(data), [self.recipient],
                               data.replace(b"\n", b"\r\n"))
            return True
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return self._refused(number, code, text)
        except smtplib.SMTPResponseException as exc:
            self._reset()
            return self._refused(number, exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            self.close()
            raise TemporaryError(f"{self.label}: the LMTP server at "
                                 f"{self.account.lmtp_address} failed during message "
                                 f"{number}: {exc}", "it stays on the server and is "
                                 "delivered on the next run") from None

    def _refused(self, number: int, code: int, text: bytes | str) -> bool:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return self.refused(number, f"{code} {text}"[:300], temporary=400 <= code < 500)

    def _reset(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            try:
                conn.close()
            except OSError:
                pass


def deliverer_for(account: Account) -> Deliverer | None:
    """The account's MDA or LMTP deliverer; None when mail goes to its own Maildir."""
    if account.deliver == "mda":
        return MdaDeliverer(account)
    if account.deliver == "lmtp":
        return LmtpDeliverer(account)
    return None


def check_delivery(account: Account) -> dict:
    """For `mailsync check`: what delivery would use, tried without delivering anything.
    The MDA's program must be found; the LMTP server must answer LHLO and take the
    recipient (MAIL FROM, RCPT TO, then RSET: no message is sent)."""
    if account.deliver == "mda":
        command = account.mda_command or ""
        try:
            program = shlex.split(command)[0]
        except (ValueError, IndexError):
            program = None
        if program and "=" not in program and shutil.which(program) is None:
            raise ConfigError(f"account {account.name}: mda_command runs {program}, which is "
                              "not found", "give its full path, or install it")
        return {"deliver": "mda", "mda_command": command}
    if account.deliver == "lmtp":
        lmtp = LmtpDeliverer(account)
        conn = lmtp._connect()
        try:
            conn.ehlo_or_helo_if_needed()
            code, said = conn.mail("")
            if code == 250:
                code, said = conn.rcpt(lmtp.recipient)
            conn.rset()
        except (smtplib.SMTPException, OSError) as exc:
            raise TemporaryError(f"account {account.name}: the LMTP server at "
                                 f"{account.lmtp_address} failed: {exc}", "retry later") \
                from None
        finally:
            lmtp.conn = conn
            lmtp.close()
        if code != 250:
            text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
            raise ConfigError(f"account {account.name}: the LMTP server at "
                              f"{account.lmtp_address} refuses {lmtp.recipient}: {code} "
                              f"{text}"[:400], "set lmtp_recipient to a user it delivers to")
        return {"deliver": "lmtp", "lmtp_address": account.lmtp_address,
                "lmtp_recipient": lmtp.recipient}
    return {}
