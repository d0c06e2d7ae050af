"""Run a private, throw-away Cyrus IMAP 3.6 on loopback for tests.

Debian's ``cyrus-imapd`` package conflicts with ``dovecot-imapd`` (installing it removes
Dovecot's imap binaries), so only ``cyrus-common`` (``master``, the libraries, the tools)
and ``sasl2-bin`` are installed, and ``imapd`` is unpacked from ``apt-get download
cyrus-imapd`` with ``dpkg-deb -x`` into ``.venv/cyrus`` (see .ci/setup). No pytest
import: usable from scripts too.

    with Cyrus(altnamespace=False) as cy:
        user = cy.new_user()       # any name logs in with cy.password; its INBOX is
                                   # created at the first login (autocreate)
        # plain IMAP on (cy.host, cy.imap_port)

What one instance is: its own ``imapd.conf`` and ``cyrus.conf``, config directory,
partition and sockets under a base directory in /tmp (owned by the ``cyrus`` user,
which Cyrus switches to when started as root), ``master`` in the foreground as a child
process with the one ``imap`` service on a free loopback port. Passwords: SASL PLAIN
and LOGIN against a sasldb of the base directory; every user made by ``new_user()`` is
in it. ``altnamespace`` (personal folders beside INBOX, or under ``INBOX.``) and
``unixhierarchysep`` (``/`` or ``.``) choose the namespace mode. ``stop()`` sends
SIGTERM to master's pid, then to each remaining descendant by pid, and waits.
"""

from __future__ import annotations

import atexit
import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.dovecot import user_exists

__all__ = ["Cyrus", "CyrusError", "find_cyrus", "require_cyrus"]

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
PASSWORD = "test-secret-pw"
_IMAPD = ("usr/lib/cyrus/bin/imapd",)
_PLACES = (ROOT / ".venv" / "cyrus", Path("/opt/cyrus-imapd"), Path("/"))


class CyrusError(RuntimeError):
    """Cyrus could not be configured or started."""


def find_cyrus() -> tuple[str, str] | None:
    """(master, imapd) paths, or None. ``$CYRUS_IMAPD`` names imapd; else it is looked
    for under .venv/cyrus, /opt/cyrus-imapd, then the system."""
    master = "/usr/lib/cyrus/bin/master"
    if not os.access(master, os.X_OK) or not shutil.which("saslpasswd2"):
        return None
    env = os.environ.get("CYRUS_IMAPD")
    candidates = [Path(env)] if env else [base / _IMAPD[0] for base in _PLACES]
    for cand in candidates:
        if os.access(cand, os.X_OK):
            return master, str(cand)
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_cyrus() -> bool:
    """True when Cyrus can run here; missing: False (skip), or RuntimeError under CI."""
    if os.geteuid() == 0 and find_cyrus() is not None and user_exists("cyrus"):
        return True
    if _in_ci():
        raise RuntimeError("Cyrus IMAP missing: run .ci/setup (cyrus-common, sasl2-bin, "
                           "imapd unpacked from cyrus-imapd into .venv/cyrus), as root")
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Cyrus:
    host = LOOPBACK
    password = PASSWORD

    def __init__(self, *, altnamespace: bool = True, unixhierarchysep: bool = True) -> None:
        found = find_cyrus()
        if found is None:
            raise CyrusError("Cyrus IMAP not found (see tests/cyrus.py)")
        self.master, self.imapd = found
        self.altnamespace, self.unixhierarchysep = altnamespace, unixhierarchysep
        self.separator = "/" if unixhierarchysep else "."
        # The personal namespace's prefix, as NAMESPACE gives it.
        self.prefix = "" if altnamespace else "INBOX" + self.separator
        self.base = Path(tempfile.mkdtemp(prefix="mailsync-cyrus-"))
        self.base.chmod(0o755)
        self.imap_port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._seq = 0
        self.conf = self.base / "imapd.conf"
        self.cyrus_conf = self.base / "cyrus.conf"
        self.sasldb = self.base / "sasldb2"
        self.log_file = self.base / "master.log"
        atexit.register(self.stop)

    # ------------------------------------------------------------------ setup
    def _write_config(self) -> None:
        b = self.base
        for sub in ("conf", "conf/socket", "conf/proc", "conf/log", "spool", "run"):
            (b / sub).mkdir(parents=True, exist_ok=True)
        yes = {True: "yes", False: "no"}
        self.conf.write_text(f"""\
configdirectory: {b}/conf
defaultpartition: default
partition-default: {b}/spool
servername: localhost
admins: cyrus
altnamespace: {yes[self.altnamespace]}
unixhierarchysep: {yes[self.unixhierarchysep]}
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: {self.sasldb}
sasl_mech_list: PLAIN LOGIN
autocreate_quota: 0
autocreate_users: anyone
lmtpsocket: {b}/conf/socket/lmtp
idlesocket: {b}/conf/socket/idle
notifysocket: {b}/conf/socket/notify
syslog_prefix: mailsync-test-cyrus
statuscache: 0
sievedir: {b}/conf/sieve
""")
        self.cyrus_conf.write_text(f"""\
START {{
  recover cmd="/usr/lib/cyrus/bin/ctl_cyrusdb -r -C {self.conf}"
}}
SERVICES {{
  imap cmd="{self.imapd} -C {self.conf}" listen="{LOOPBACK}:{self.imap_port}" prefork=0
}}
EVENTS {{
}}
""")
        self.sasldb.touch()
        uid = pwd.getpwnam("cyrus").pw_uid
        gid = grp.getgrnam("mail").gr_gid
        for path in [b, *b.rglob("*")]:
            os.chown(path, uid, gid)
        self.sasldb.chmod(0o640)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 15.0) -> "Cyrus":
        if self._proc is not None:
            return self
        self.imap_port = _free_port()
        self._write_config()
        log = open(self.log_file, "ab")
        try:
            self._proc = subprocess.Popen(
                [self.master, "-C", str(self.conf), "-M", str(self.cyrus_conf),
                 "-p", str(self.base / "run" / "master.pid"), "-D"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CyrusError(f"Cyrus master exited ({self._proc.returncode}): "
                                 f"{self.log_tail()}")
            try:
                with socket.create_connection((LOOPBACK, self.imap_port), timeout=2) as s:
                    if s.recv(200).startswith(b"* OK"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise CyrusError(f"Cyrus did not answer on {self.imap_port}: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.pid] if self.pid else []
        while todo:
            for child in children.get(todo.pop(), []):
                out.append(child)
                todo.append(child)
        return out

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is not None:
            descendants = self._descendants()
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
            for pid in descendants:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._proc = None
        if self.base.exists() and os.environ.get("MAILSYNC_KEEP_CYRUS") != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> "Cyrus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ users
    def new_user(self, prefix: str = "u") -> str:
        """A fresh user with self.password in the sasldb; its INBOX appears at login."""
        self._seq += 1
        user = f"{prefix}{self._seq}x{os.urandom(3).hex()}"
        done = subprocess.run(["saslpasswd2", "-p", "-c", "-f", str(self.sasldb),
                               "-u", "localhost", user], input=self.password.encode(),
                              capture_output=True)
        if done.returncode != 0:
            raise CyrusError(f"saslpasswd2: {done.stderr.decode(errors='replace')}")
        return user

    def full(self, folder: str) -> str:
        """The server's name of a folder the user sees as `folder` ("/"-separated)."""
        if folder == "INBOX":
            return folder
        return self.prefix + folder.replace("/", self.separator)
