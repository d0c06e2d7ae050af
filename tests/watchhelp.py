"""Running `mailsync watch` in tests and benches: a subprocess stopped by its pid, its
output in a file, and polling with a generous deadline (never a timed assertion)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import AccountSetup, cli_command, cli_env, write_config

# Dovecot's own capability list without NOTIFY: watch must fall back to IDLE.
NO_NOTIFY = ("imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT "
             "SORT=DISPLAY THREAD=REFERENCES THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND "
             "URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED "
             "I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH "
             "LIST-STATUS BINARY MOVE SPECIAL-USE\n")


def wait_until(check, what: str, timeout: float = 30.0, interval: float = 0.05,
               output=lambda: ""):
    """Poll check() until it returns something true (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:   # the file moved meanwhile, the server restarts ...
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"not within {timeout:g}s: {what} (last error: {last_error!r})\n"
                         f"{output()}")


def account_on(server, base: Path, protocol: str = "imap", **keys) -> AccountSetup:
    """An account for a fresh user on a Dovecot of the test's own."""
    user = server.new_user()
    base.mkdir(parents=True, exist_ok=True)
    maildir, state_dir = base / "Mail", base / "state"
    port = server.pop3s_port if protocol == "pop3" else server.imaps_port
    settings = {"protocol": protocol, "host": server.host, "port": port, "user": user,
                "password": server.password, "ca_file": str(server.ca_file),
                "maildir": str(maildir), "state_dir": str(state_dir), "timeout": 20}
    settings.update(keys)
    config = write_config(base / "config.toml", "test", settings)
    return AccountSetup(server, user, config, maildir, state_dir)


class Watching:
    """`mailsync watch` for one account, as a subprocess."""

    def __init__(self, acct: AccountSetup, *args: str, env: dict | None = None) -> None:
        self.acct = acct
        self.log = acct.config.parent / f"watch-{time.monotonic_ns()}.out"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cli_command("-c", str(acct.config), "watch", *args),
                                         env=cli_env(env), stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL)

    def output(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""

    def status(self) -> dict:
        return json.loads((self.acct.state_dir / "watch.json").read_text())

    def connected(self, how: str, timeout: float = 30) -> None:
        wait_until(lambda: how in self.status()["connection"], f"watch {how}", timeout,
                   output=self.output)

    def wait(self, check, what: str, timeout: float = 30):
        return wait_until(check, what, timeout, output=self.output)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"watch did not stop on {sig}:\n{self.output()}")

    def __enter__(self) -> "Watching":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def recorded_runs(acct: AccountSetup) -> list[tuple[str, int]]:
    db = sqlite3.connect(f"file:{acct.state_dir / 'state.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT command, exit_code FROM runs ORDER BY id").fetchall()
    finally:
        db.close()
