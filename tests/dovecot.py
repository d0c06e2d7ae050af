"""Run a private, throw-away Dovecot (IMAP + POP3) on loopback for tests.

This module is imported by the pytest fixtures in ``tests/conftest.py`` and
also by benchmark / demo scripts, so it must not import pytest.

Quick use::

    from tests.dovecot import Dovecot
    with Dovecot() as dc:                    # temp dir, removed on stop()
        user = dc.new_user()
        dc.seed(user, [b"Subject: hi\\n\\nbody\\n"])
        # POP3S:  poplib.POP3_SSL(dc.host, dc.pop3s_port,
        #             context=ssl.create_default_context(cafile=dc.ca_file))
        #         .user(user); .pass_(dc.password)

What one instance provides
--------------------------
* Four listeners on free loopback ports, bound on 127.0.0.1 **and**
  127.0.0.2 (``mismatch_host``):

  ``imaps_port`` (IMAP, implicit TLS), ``imap_port`` (IMAP, plain + STARTTLS),
  ``pop3s_port`` (POP3, implicit TLS), ``pop3_port`` (POP3, plain + STLS).

* A private test CA (``ca_file``) and a server certificate signed by it with
  ``subjectAltName = DNS:localhost, IP:127.0.0.1``.  Clients that verify
  against ``ca_file`` succeed when they connect to ``"127.0.0.1"`` or
  ``"localhost"``.  Connecting to ``mismatch_host`` (``"127.0.0.2"``, which
  reaches the very same server) must FAIL host-name verification -- use it to
  test host-name mismatch handling.  ``untrusted_ca_file`` is a second CA
  that did not sign anything (for "wrong CA" tests).

* Any user name logs in with ``password`` (static passdb/userdb), so each
  test just takes a fresh ``new_user()``; mail lives in
  ``<base>/home/<user>/Maildir`` (Maildir++), owned by nobody:nogroup when
  running as root.  The IMAP hierarchy separator is ``separator`` ("/" by
  default); on disk subfolders are ``.A.B`` (Maildir++) with modified UTF-7
  names, exactly as Dovecot itself stores them.

* Special-use mailboxes Sent/Trash/Drafts/Junk are declared (``auto = no``:
  they only exist once created or seeded).  CONDSTORE, QRESYNC, UIDPLUS,
  MOVE, SPECIAL-USE, IDLE are advertised after login (Dovecot defaults).
  POP3 UIDL format is ``%08Xu%08Xv``; PIPELINING is advertised by default.

Lifecycle: ``start()`` (~0.1 s) runs ``dovecot -F -c <conf>`` as a child
process and waits until every port answers; ``stop()`` (~1 s: Dovecot's
master waits a fixed second for its log process) sends SIGTERM to that pid,
SIGTERMs the recorded descendants by pid (imap processes would otherwise
linger 10 s), waits until the master and all of its descendants are gone
(SIGKILL by pid for stragglers), is idempotent, and is also registered with
``atexit``; the child also gets PR_SET_PDEATHSIG so it dies with the Python
process even on SIGKILL.  ``restart()`` stops and starts again on the same
ports, keeping all mail (for "server went away" tests).  A base directory
created by ``Dovecot()`` itself is removed by ``stop()`` unless
``MAILSYNC_KEEP_DOVECOT=1``.  ``log_tail()`` returns the end of the server log.

Requires root (mail runs as nobody:nogroup, logins as dovenull, login
processes chrooted) or, unprivileged, runs everything as the current user
without chroot.  As root the base directory and its ancestors must be
traversable by nobody (a pytest ``tmp_path`` is not: /tmp/pytest-of-root is
0700), which is why the fixture uses its own directory under /tmp.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

__all__ = [
    "Dovecot",
    "DovecotError",
    "find_dovecot",
    "require_dovecot",
    "find_dovecot_tool",
    "imap_utf7_encode",
    "pid_alive",
]

DEFAULT_PASSWORD = "test-secret-pw"
LOOPBACK = "127.0.0.1"
MISMATCH_HOST = "127.0.0.2"  # same server, but not in the certificate's SAN


class DovecotError(RuntimeError):
    """Dovecot could not be configured or started (message has the log tail)."""


# --------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------

def find_dovecot() -> str | None:
    """Path of the dovecot binary, or None.

    ``$DOVECOT_BIN`` wins; then ``$PATH``; then the usual sbin locations
    (they are often not on a non-root PATH).
    """
    env = os.environ.get("DOVECOT_BIN")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("dovecot")
    if found:
        return found
    for cand in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot", "/sbin/dovecot"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_dovecot_tool(name: str) -> str | None:
    """A program of Dovecot's libexec dir (``lmtp``, ``dovecot-lda``), or None."""
    for cand in (f"/usr/lib/dovecot/{name}", f"/usr/libexec/dovecot/{name}",
                 f"/usr/local/libexec/dovecot/{name}"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def require_dovecot() -> bool:
    """True if dovecot and openssl are usable.

    If either is missing: raise RuntimeError when ``CI=true`` (a CI run must
    never silently skip the server tests), otherwise return False so the
    caller can skip.
    """
    missing = []
    if find_dovecot() is None:
        missing.append("dovecot (apt-get install dovecot-imapd dovecot-pop3d)")
    if shutil.which("openssl") is None:
        missing.append("openssl")
    if not missing:
        return True
    if _in_ci():
        raise RuntimeError("test server prerequisites missing: " + ", ".join(missing))
    return False


def require_or_skip(require: Callable[[], bool], missing: str) -> None:
    """Skip the calling test when require() finds its server missing; require() raises
    RuntimeError under CI=true, which fails the test instead."""
    import pytest
    try:
        available = require()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    if not available:
        pytest.skip(missing)


@contextmanager
def private_dovecot(**options) -> Iterator["Dovecot"]:
    """A started Dovecot of the caller's own (options as Dovecot takes them), stopped by
    pid afterwards. Without Dovecot the test is skipped, or failed under CI=true."""
    require_or_skip(require_dovecot, "dovecot (or openssl) not installed")
    server = Dovecot(**options)   # own temp dir under /tmp, removed by stop()
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def imap_utf7_encode(name: str) -> str:
    """Encode one mailbox name component in IMAP modified UTF-7 (RFC 3501)."""
    out: list[str] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            raw = "".join(buf).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-")
            buf.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            buf.append(ch)
    flush()
    return "".join(out)


def _pick_ports(count: int, hosts: tuple[str, ...]) -> list[int]:
    """Ports that are currently free on every host in *hosts*.

    Bind port 0 on the first host, check the same port on the others, keep all
    sockets open until we have *count* distinct ports, then close them.  There
    is an unavoidable race with other processes; start() retries on EADDRINUSE.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        attempts = 0
        while len(ports) < count:
            attempts += 1
            if attempts > 200:
                raise DovecotError("could not find free loopback ports")
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((hosts[0], 0))
            held.append(s)
            port = s.getsockname()[1]
            ok = True
            for h in hosts[1:]:
                t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    t.bind((h, port))
                except OSError:
                    ok = False
                finally:
                    t.close()
            if ok and port not in ports:
                ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()


def _can_bind(host: str) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _proc_children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return kids
    for ent in entries:
        if not ent.isdigit():
            continue
        st = _proc_stat(int(ent))
        if st is not None:
            kids.setdefault(st[0], []).append(int(ent))
    return kids


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, starttime) of *pid* from /proc, or None if gone/zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces/parens: split after the last ')'
    rest = data[data.rfind(b")") + 2:].split()
    if not rest or rest[0] == b"Z":
        return None
    return int(rest[1]), int(rest[19])


def _descendants(pid: int) -> dict[int, int]:
    """{pid: starttime} for all live descendants of *pid* (Linux /proc)."""
    kids = _proc_children_map()
    out: dict[int, int] = {}
    todo = list(kids.get(pid, []))
    while todo:
        p = todo.pop()
        st = _proc_stat(p)
        if st is None or p in out:
            continue
        out[p] = st[1]
        todo.extend(kids.get(p, []))
    return out


def _alive(pid: int, starttime: int | None = None) -> bool:
    st = _proc_stat(pid)
    if st is None:
        return False
    return starttime is None or st[1] == starttime


def _proc_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie (Linux /proc)."""
    return _alive(pid)


def _pdeathsig_preexec() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def _run_openssl(args: list[str], cwd: Path) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
    )
    if proc.returncode != 0:
        raise DovecotError(
            f"openssl {' '.join(args)} failed:\n{proc.stdout.decode(errors='replace')}"
        )


# --------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------

_SPECIAL_USE = (("Drafts", r"\Drafts"), ("Junk", r"\Junk"), ("Sent", r"\Sent"), ("Trash", r"\Trash"))


class Dovecot:
    """A private Dovecot instance under *base* (a temp dir when None).

    Attributes (valid after construction; ports after ``start()``):
    ``host``, ``mismatch_host``, ``imaps_port``, ``imap_port``,
    ``pop3s_port``, ``pop3_port``, ``ca_file``, ``untrusted_ca_file``,
    ``password``, ``separator``, ``pid``, ``base``, ``conf_file``,
    ``log_file``, ``home_root``.
    """

    host = LOOPBACK
    password = DEFAULT_PASSWORD

    def __init__(
        self,
        base: Path | str | None = None,
        *,
        password: str = DEFAULT_PASSWORD,
        separator: str = "/",
        mail_max_userip_connections: int = 100,
        die_with_parent: bool = True,
        extra_config: str = "",
        oauth2_introspection_url: str | None = None,
        namespace_prefix: str = "",
    ) -> None:
        self.binary = find_dovecot()
        if self.binary is None:
            raise DovecotError("dovecot binary not found (set DOVECOT_BIN or install dovecot-imapd/dovecot-pop3d)")
        self._own_base = base is None
        if base is None:
            base = tempfile.mkdtemp(prefix="mailsync-dovecot-")
        self.base = Path(base).resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.separator = separator
        # The personal namespace's prefix: "INBOX." (with separator ".") is the layout of
        # Courier and of older Dovecot setups; INBOX.Sent is then .Sent on disk.
        self.namespace_prefix = namespace_prefix
        self._max_userip = mail_max_userip_connections
        self._die_with_parent = die_with_parent
        self._extra_config = extra_config
        # With an introspection URL, XOAUTH2 and OAUTHBEARER logins are checked by a
        # passdb { driver = oauth2 } against it (RFC 7662, POST); the static password
        # then serves PLAIN and LOGIN only.
        self.oauth2_introspection_url = oauth2_introspection_url

        self.mismatch_host: str | None = MISMATCH_HOST if _can_bind(MISMATCH_HOST) else None
        self.imaps_port = self.imap_port = self.pop3s_port = self.pop3_port = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._last_pids: set[int] = set()
        self._lock = threading.Lock()
        self._user_seq = 0
        # Seeded maildir file names carry increasing fake delivery times so
        # Dovecot assigns UIDs (and POP3 numbers) in seed order.
        self._seed_clock = int(time.time()) - 10_000_000
        self._seed_seq = 0

        if os.geteuid() == 0:
            self.mail_uid = pwd.getpwnam("nobody").pw_uid
            try:
                self.mail_gid = grp.getgrnam("nogroup").gr_gid
            except KeyError:
                self.mail_gid = grp.getgrnam("nobody").gr_gid
            self._internal_user = "dovecot" if user_exists("dovecot") else "nobody"
            self._login_user = "dovenull" if user_exists("dovenull") else "nobody"
            self._internal_group = "dovecot" if _group_exists("dovecot") else grp.getgrgid(self.mail_gid).gr_name
            self._check_traversable(self.base)
            self.base.chmod(0o755)
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(os.getuid()).pw_name
            self._internal_user = self._login_user = me
            self._internal_group = grp.getgrgid(os.getgid()).gr_name

        self.conf_file = self.base / "dovecot.conf"
        self.log_file = self.base / "dovecot.log"
        self.state_dir = self.base / "state"
        self.ssl_dir = self.base / "ssl"
        self.home_root = self.base / "home"
        # Unix socket paths are limited to ~107 bytes: keep base_dir short.
        run = self.base / "run"
        self._own_run = len(str(run)) > 60
        self.run_dir = Path(tempfile.mkdtemp(prefix="dcrun-")) if self._own_run else run
        # LMTP on a socket in run_dir, when Dovecot's lmtp (dovecot-lmtpd) is installed.
        self.lmtp_socket: Path | None = (self.run_dir / "lmtp"
                                         if find_dovecot_tool("lmtp") else None)

        self.ca_file = self.ssl_dir / "ca.pem"
        self.untrusted_ca_file = self.ssl_dir / "untrusted-ca.pem"
        self.cert_file = self.ssl_dir / "server.pem"
        self.key_file = self.ssl_dir / "server.key"

        try:
            for d in (self.state_dir, self.ssl_dir, self.home_root, self.run_dir):
                d.mkdir(parents=True, exist_ok=True)
            self.ssl_dir.chmod(0o755)  # CA/cert world-readable, *.key 0600
            self._chown(self.home_root)
            self.home_root.chmod(0o755)
            self._make_certs()
        except BaseException:
            self._cleanup_dirs()
            raise

    def _cleanup_dirs(self) -> None:
        if self._own_run:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._own_base and os.environ.get("MAILSYNC_KEEP_DOVECOT") != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------ setup
    @staticmethod
    def _check_traversable(path: Path) -> None:
        """As root, mail processes run as nobody: every ancestor needs o+x."""
        for p in [path, *path.parents]:
            try:
                mode = p.stat().st_mode
            except OSError:
                continue
            if p != path and not mode & 0o001:
                raise DovecotError(
                    f"{p} is not traversable by other users (mode {oct(mode & 0o777)}); "
                    f"mail processes run as nobody and cannot reach {path}. "
                    "Use a base under /tmp (e.g. Dovecot() with no base)."
                )

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.mail_uid, self.mail_gid)

    def _make_certs(self) -> None:
        d = self.ssl_dir
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca_ext = [
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
        ]
        _run_openssl(["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem",
                      "-days", "3650", "-subj", "/O=mailsync tests/CN=mailsync test CA", *ca_ext], d)
        _run_openssl(["req", "-x509", *ec, "-keyout", "untrusted-ca.key", "-out", "untrusted-ca.pem",
                      "-days", "3650", "-subj", "/O=mailsync tests/CN=untrusted test CA", *ca_ext], d)
        _run_openssl(["req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
                      "-subj", "/O=mailsync tests/CN=localhost"], d)
        (d / "server.ext").write_text(
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid:always\n"
        )
        _run_openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                      "-CAcreateserial", "-out", "server.pem", "-days", "825",
                      "-extfile", "server.ext"], d)
        for f in d.iterdir():
            f.chmod(0o600 if f.suffix == ".key" else 0o644)

    def _oauth2_mechanisms(self) -> str:
        return " xoauth2 oauthbearer" if self.oauth2_introspection_url else ""

    def _oauth2_passdb(self) -> str:
        if not self.oauth2_introspection_url:
            return ""
        args = self.base / "dovecot-oauth2.conf.ext"
        args.write_text(f"introspection_mode = post\n"
                        f"introspection_url = {self.oauth2_introspection_url}\n"
                        "force_introspection = yes\n"
                        "username_attribute = username\n"
                        "active_attribute = active\n"
                        "active_value = true\n")
        args.chmod(0o644)
        return (f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {args}\n}}\n")

    def _config_text(self) -> str:
        addrs = self.host if self.mismatch_host is None else f"{self.host}, {self.mismatch_host}"
        mailboxes = "\n".join(
            f"  mailbox {name} {{\n    special_use = {flag}\n    auto = no\n  }}"
            for name, flag in _SPECIAL_USE
        )
        # chroot() needs root; unprivileged runs must disable it
        nochroot = "" if os.geteuid() == 0 else "  chroot =\n"
        return f"""\
# Generated by tests/dovecot.py -- complete config, nothing from /etc/dovecot.
protocols = imap pop3{" lmtp" if self.lmtp_socket else ""}
listen = {addrs}
base_dir = {self.run_dir}
state_dir = {self.state_dir}
instance_name = mailsync-test-{os.getpid()}-{id(self):x}
log_path = {self.log_file}
info_log_path = {self.log_file}
debug_log_path = {self.log_file}
default_internal_user = {self._internal_user}
default_internal_group = {self._internal_group}
default_login_user = {self._login_user}
first_valid_uid = {min(self.mail_uid, 500)}
first_valid_gid = 1
verbose_proctitle = no
shutdown_clients = yes
version_ignore = yes

ssl = yes
ssl_cert = <{self.cert_file}
ssl_key = <{self.key_file}
disable_plaintext_auth = no
auth_mechanisms = plain login{self._oauth2_mechanisms()}
# Failed logins: no 2 s failure delay (Dovecot still answers after ~0.5 s)
# and no anvil auth penalty (it grows to 15 s per IP and login_trusted_networks
# does not lift it): disabling the anvil-auth-penalty socket turns it off.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_max_userip_connections = {self._max_userip}

mail_location = maildir:~/Maildir
mail_fsync = never
pop3_uidl_format = %08Xu%08Xv

{self._oauth2_passdb()}passdb {{
  driver = static
  args = password={self.password}
{"  mechanisms = plain login" if self.oauth2_introspection_url else ""}
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={self.home_root}/%u allow_all_users=yes
}}

namespace inbox {{
  inbox = yes
  separator = {self.separator}
  prefix = {self.namespace_prefix}
{mailboxes}
}}

service anvil {{
{nochroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
{nochroot}  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
{nochroot}  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
{self._extra_config}
"""

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 10.0, *, keep_ports: bool = False) -> "Dovecot":
        """Run ``dovecot -F`` and wait until all four ports answer.

        New free ports are picked (retrying on a bind race) unless
        *keep_ports* (used by restart()) asks to reuse the current ones.
        """
        if self._proc is not None:
            return self
        if not self.base.is_dir():
            raise DovecotError(f"{self.base} is gone (stop() removes its own temp dir; use restart())")
        last_err: Exception | None = None
        hosts = (self.host,) if self.mismatch_host is None else (self.host, self.mismatch_host)
        reuse = keep_ports and self.imap_port != 0
        for _attempt in range(1 if reuse else 5):
            if not reuse:
                (self.imaps_port, self.imap_port, self.pop3s_port, self.pop3_port) = _pick_ports(4, hosts)
            self.conf_file.write_text(self._config_text())
            log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
            with open(self.base / "dovecot.stdout", "ab") as out:
                self._proc = subprocess.Popen(
                    [self.binary, "-F", "-c", str(self.conf_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec if self._die_with_parent else None,
                )
            self.pid = self._proc.pid
            atexit.register(self.stop)
            try:
                self._wait_ready(timeout)
                return self
            except DovecotError as exc:
                last_err = exc
                self._kill()
                tail = self._read_from(log_start) + self._stdout_tail()
                if "Address already in use" in tail and not reuse:
                    continue  # port race: pick new ports and try again
                raise
        raise DovecotError(f"dovecot failed to start after retries: {last_err}")

    def restart(self, timeout: float = 10.0) -> "Dovecot":
        """Stop the server processes and start again on the SAME ports, keeping all mail."""
        with self._lock:
            self._kill()
        return self.start(timeout, keep_ports=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {
            self.imap_port: b"* OK", self.pop3_port: b"+OK",
            self.imaps_port: None, self.pop3s_port: None,
        }
        while pending:
            if self._proc.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {self._proc.returncode}\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"dovecot ports {sorted(pending)} not ready after {timeout}s\n{self.log_tail()}"
                )
            for port, greeting in list(pending.items()):
                try:
                    with socket.create_connection((self.host, port), timeout=2) as s:
                        if greeting is not None:
                            s.settimeout(max(0.5, deadline - time.monotonic()))
                            data = s.recv(64)
                            if not data.startswith(greeting):
                                continue
                    del pending[port]
                except OSError:
                    pass
            if pending:
                time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (by pid) and all its children. Idempotent."""
        with self._lock:
            try:
                atexit.unregister(self.stop)
            except Exception:
                pass
            if self._proc is not None:
                self._kill(timeout)
            self._cleanup_dirs()

    def _kill(self, timeout: float = 10.0) -> None:
        """SIGTERM the master (by pid) and make sure every descendant is gone.

        Dovecot's master only SIGQUITs imap processes, which then keep a
        logged-in client for up to 10 s (MASTER_SERVICE_DIE_TIMEOUT); so we
        also SIGTERM the descendants (recorded by pid + start time while the
        master still lives) ourselves.  The log process is left to the master,
        which waits a fixed ~1 s for it: stop() takes about 1 s.
        """
        proc = self._proc
        if proc is None:
            return
        kids = _descendants(proc.pid)
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 0.1
            while proc.poll() is None and time.monotonic() < deadline:
                kids.update(_descendants(proc.pid))
                time.sleep(0.01)
            for p, st in kids.items():
                if _proc_name(p).endswith("/log"):
                    continue
                if _alive(p, st):
                    try:
                        os.kill(p, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # the master is gone; its children notice and exit on their own
        deadline = time.monotonic() + timeout
        while any(_alive(p, st) for p, st in kids.items()):
            if time.monotonic() > deadline:
                for p, st in kids.items():
                    if _alive(p, st):
                        try:
                            os.kill(p, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                break
            time.sleep(0.01)
        self._proc = None
        self.pid = None
        self._last_pids = set(kids) | {proc.pid}

    def process_pids(self) -> list[int]:
        """Pids of the master and its live descendants (empty when stopped)."""
        if self._proc is None or self._proc.poll() is not None:
            return []
        return [self._proc.pid, *_descendants(self._proc.pid)]

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"<Dovecot pid={self.pid} imaps={self.imaps_port} imap={self.imap_port} "
                f"pop3s={self.pop3s_port} pop3={self.pop3_port} base={self.base}>")

    # ------------------------------------------------------------ logs
    def _read_from(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _stdout_tail(self) -> str:
        try:
            return (self.base / "dovecot.stdout").read_bytes()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """Last *lines* of the Dovecot log (plus its stdout/stderr)."""
        text = self._read_from(0)
        out = "\n".join(text.splitlines()[-lines:])
        so = self._stdout_tail().strip()
        return out + (f"\n[stdout/stderr]\n{so}" if so else "")

    # ------------------------------------------------------------ users & mail
    def new_user(self, prefix: str = "u") -> str:
        """A fresh, unique (lower-case) user name; it can log in at once."""
        with self._lock:
            self._user_seq += 1
            seq = self._user_seq
        return f"{prefix.lower()}{seq}x{os.urandom(3).hex()}"

    def home(self, user: str) -> Path:
        return self.home_root / user.lower()

    def maildir(self, user: str) -> Path:
        """The user's server-side Maildir (``~/Maildir``; may not exist yet)."""
        return self.home(user) / "Maildir"

    def folder_path(self, user: str, folder: str = "INBOX") -> Path:
        """On-disk Maildir++ directory of IMAP mailbox *folder* (Dovecot's rules).

        INBOX is the Maildir root; ``A/B`` (with separator "/") is ``.A.B``;
        non-ASCII is stored as IMAP modified UTF-7.
        """
        root = self.maildir(user)
        if folder.upper() == "INBOX":
            return root
        if self.namespace_prefix and folder.startswith(self.namespace_prefix):
            folder = folder[len(self.namespace_prefix):]
        parts = folder.split(self.separator)
        for p in parts:
            if not p:
                raise ValueError(f"empty component in mailbox name {folder!r}")
            if self.separator != "." and "." in p:
                raise ValueError(f"'.' is not allowed in a mailbox name with Maildir++ ({folder!r})")
        return root / ("." + ".".join(imap_utf7_encode(p) for p in parts))

    def _ensure_maildir(self, path: Path, subfolder: bool) -> None:
        for d in (path, path / "cur", path / "new", path / "tmp"):
            if not d.is_dir():
                d.mkdir(mode=0o700, exist_ok=True)
                self._chown(d)
        if subfolder:
            marker = path / "maildirfolder"
            if not marker.exists():
                marker.touch(0o600)
                self._chown(marker)

    def _ensure_user(self, user: str) -> None:
        for d in (self.home(user), self.maildir(user)):
            if not d.is_dir():
                d.mkdir(mode=0o700, exist_ok=True)
                self._chown(d)
        self._ensure_maildir(self.maildir(user), subfolder=False)

    def seed(self, user: str, messages: list[bytes], folder: str = "INBOX",
             flags: str = "") -> list[Path]:
        """Deliver *messages* straight into the user's server Maildir.

        Files go to ``new/`` when *flags* is empty, otherwise to ``cur/`` with
        the ``:2,<flags>`` suffix (Maildir flags: D F P R S T).  File names
        carry increasing delivery times, so UIDs / POP3 message numbers follow
        list order (also across several seed() calls).  Names include ``S=``
        (size) and ``W=`` (CRLF size) like Dovecot's own.  Returns the paths.
        """
        self._ensure_user(user)
        path = self.folder_path(user, folder)
        if path != self.maildir(user):
            self._ensure_maildir(path, subfolder=True)
        flags = "".join(sorted(set(flags)))
        tmp = path / "tmp"
        dest_dir = path / ("cur" if flags else "new")
        with self._lock:
            start = self._seed_seq
            self._seed_seq += len(messages)
        pid = os.getpid()
        root = os.geteuid() == 0
        out: list[Path] = []
        for k, msg in enumerate(messages):
            if isinstance(msg, str):
                msg = msg.encode("utf-8")
            seq = start + k
            t = self._seed_clock + seq
            vsize = len(msg) + msg.count(b"\n") - msg.count(b"\r\n")
            name = f"{t}.M{seq % 1000000:06d}P{pid}Q{seq}.mailsync-test,S={len(msg)},W={vsize}"
            if flags:
                name += ":2," + flags
            tmp_file = tmp / name
            fd = os.open(tmp_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(msg)
                while view:
                    view = view[os.write(fd, view):]
                if root:
                    os.fchown(fd, self.mail_uid, self.mail_gid)
            finally:
                os.close(fd)
            os.utime(tmp_file, (t, t))
            final = dest_dir / name
            os.rename(tmp_file, final)
            out.append(final)
        return out

    def server_entries(self, user: str, folder: str = "INBOX") -> list[tuple[str, str, bytes]]:
        """(file name without flags, flags, bytes) for every stored message.

        Sorted by delivery order (time part of the name, then name).  Flags
        are the Maildir letters after ``:2,`` ("" for new/ messages).
        """
        path = self.folder_path(user, folder)
        items = []
        for sub in ("new", "cur"):
            d = path / sub
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for n in names:
                base, _, fl = n.partition(":2,")
                try:
                    data = (d / n).read_bytes()
                except FileNotFoundError:  # moved new->cur under our feet
                    continue
                items.append((base, fl, data))

        def key(item):
            head = item[0].split(".", 1)[0]
            return (int(head) if head.isdigit() else 0, item[0])

        items.sort(key=key)
        return items

    def server_messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Bodies currently stored in *folder* (from new/ and cur/), in delivery order."""
        return [data for _n, _f, data in self.server_entries(user, folder)]

    def server_folders(self, user: str) -> list[str]:
        """On-disk Maildir++ folder directory names (e.g. ``.Sent``) of *user*."""
        root = self.maildir(user)
        try:
            return sorted(n for n in os.listdir(root) if n.startswith(".") and (root / n).is_dir())
        except FileNotFoundError:
            return []


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False
