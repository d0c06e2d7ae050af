"""Shared pytest fixtures for mailsync."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # make `import tests.dovecot` / `import mailsync` work under plain `pytest`
    sys.path.insert(0, str(_ROOT))


# ===========================================================================
# BEGIN Dovecot test-server fixtures (owner: tests/dovecot.py)
# One real Dovecot (IMAP+POP3, TLS) on loopback for the whole session; each
# test isolates itself with a fresh user name (any name logs in with
# dovecot.password).  Missing dovecot: skip locally, fail under CI=true.
# ===========================================================================
from tests.dovecot import Dovecot, private_dovecot  # noqa: E402


@pytest.fixture(scope="session")
def dovecot():
    """The session's running :class:`tests.dovecot.Dovecot` instance."""
    with private_dovecot() as server:
        yield server


@pytest.fixture
def mail_user(dovecot) -> str:
    """A fresh user name on the session Dovecot (empty mailbox)."""
    return dovecot.new_user()


# ===========================================================================
# END Dovecot test-server fixtures
# ===========================================================================


# ===========================================================================
# mailsync accounts and CLI runs against the session Dovecot.
# ===========================================================================
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass  # noqa: E402


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        return json.loads(self.out)


@dataclass
class AccountSetup:
    """A user on the test server and a mailsync config pointing at it."""

    server: Dovecot
    user: str
    config: Path
    maildir: Path
    state_dir: Path
    name: str = "test"

    def run(self, *args: str, env: dict | None = None, timeout: float = 300) -> CliResult:
        return run_cli("-c", str(self.config), *args, env=env, timeout=timeout)

    def run_here(self, *args: str, env: dict | None = None) -> CliResult:
        """The same command in this process (tests/inprocess.py): output and exit status."""
        from tests.inprocess import run_in_process
        return run_in_process("-c", str(self.config), *args, env=env)

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(cli_command("-c", str(self.config), *args),
                                env=cli_env(env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def local_messages(self, folder: Path | None = None) -> list[bytes]:
        root = folder or self.maildir
        return [p.read_bytes() for sub in ("new", "cur") if (root / sub).is_dir()
                for p in sorted((root / sub).iterdir())]

    def server_messages(self, folder: str = "INBOX") -> list[bytes]:
        return [data for _, _, data in self.server.server_entries(self.user, folder)]


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailsync", *args]


def cli_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSYNC_")}
    env["PYTHONPATH"] = str(_ROOT)
    env.update(extra or {})
    return env


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> CliResult:
    done = subprocess.run(cli_command(*args), env=cli_env(env), capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return CliResult(done.returncode, done.stdout.decode(), done.stderr.decode())


def write_config(path: Path, name: str, keys: dict) -> Path:
    lines = [f"[accounts.{name}]"]
    for key, value in keys.items():
        lines.append(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def make_account(dovecot, tmp_path):
    """make_account(protocol="pop3", **keys) -> AccountSetup for a fresh server user."""
    counter = iter(range(1000))

    def make(protocol: str = "pop3", user: str | None = None, **keys) -> AccountSetup:
        n = next(counter)
        user = user or dovecot.new_user()
        base = tmp_path / f"acct{n}"
        base.mkdir()
        maildir, state_dir = base / "Mail", base / "state"
        port = dovecot.pop3s_port if protocol == "pop3" else dovecot.imaps_port
        settings = {"protocol": protocol, "host": dovecot.host, "port": port,
                    "user": user, "password": dovecot.password,
                    "ca_file": str(dovecot.ca_file), "maildir": str(maildir),
                    "state_dir": str(state_dir), "timeout": 20}
        settings.update(keys)
        settings = {k: v for k, v in settings.items() if v is not None}
        config = write_config(base / "config.toml", "test", settings)
        return AccountSetup(dovecot, user, config, Path(settings.get("maildir", maildir)),
                            Path(settings.get("state_dir", state_dir)))

    return make


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into: mode 0500, or a read-only tmpfs when root
    (root ignores permission bits). Unmounted afterwards."""
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        yield path
        path.chmod(0o700)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@dataclass
class ImapSetup:
    acct: AccountSetup
    remote: "object"
    local: "object"

    def sync(self, *args: str, env: dict | None = None) -> CliResult:
        return self.acct.run("--json", "sync", *args, env=env)

    def sync_in_process(self, monkeypatch, *args: str) -> int:
        """One `mailsync sync` in this process, where a test can watch or patch it."""
        from mailsync.cli.app import main
        monkeypatch.setenv("MAILSYNC_CONFIG", str(self.acct.config))
        with pytest.raises(SystemExit) as done:
            main(["-c", str(self.acct.config), "-q", "sync", *args])
        return done.value.code


@pytest.fixture
def imap_account(make_account):
    """make(**keys) -> ImapSetup: an IMAP account, a second client on the server (remote)
    and a local mail client on the Maildir (local). Clients are logged out after."""
    from tests.imaphelp import Local, Remote
    made = []

    def make(**keys) -> ImapSetup:
        acct = make_account("imap", **keys)
        setup = ImapSetup(acct, Remote(acct.server, acct.user),
                          Local(acct.maildir, keys.get("layout", "maildir++")))
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.remote.close()


# ===========================================================================
# The fast part: `pytest -m "not server"` runs every test that talks to no server
# (real or fake) and runs no peer tool; under a minute. A test is a server test when
# it uses a fixture that starts one, when its module starts one itself (it names one
# of SERVER_MODULES), or when it says so with @pytest.mark.server.
# ===========================================================================
SERVER_FIXTURES = {"dovecot", "cyrus"}
SERVER_MODULES = ("tests.dovecot", "tests.cyrus", "tests.fakeserver", "tests.proxy",
                  "tests.oauthserver", "tests.peers", "Dovecot(")
_starts_servers: dict[str, bool] = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "server: talks to a server (Dovecot, Cyrus, a fake "
                                       "or a proxy) or runs a peer tool; the fast part is "
                                       "-m 'not server'")


def _module_starts_servers(path: Path) -> bool:
    if str(path) not in _starts_servers:
        text = path.read_text(encoding="utf-8")
        _starts_servers[str(path)] = any(name in text for name in SERVER_MODULES)
    return _starts_servers[str(path)]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if (SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
                or _module_starts_servers(Path(str(item.fspath)))):
            item.add_marker(pytest.mark.server)
