"""Built-in OAuth2 sign-in against a real Dovecot whose passdb { driver = oauth2 } asks a
fake authorization server (tests/oauthserver.py) about every XOAUTH2/OAUTHBEARER token.

`mailsync login` by loopback redirect, pasted redirect, device code and client
credentials each lead to a working IMAP sync and POP3 fetch with both mechanisms; short
access tokens are refreshed run after run without a new login; a revoked sign-in ends
with exit 77 and one line; no token, refresh token, code or client secret shows up in
any output, trace, error, process title or state file.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import AccountSetup, cli_command, cli_env, write_config
from tests.corpus import make_corpus
from tests.dovecot import Dovecot, private_dovecot
from tests.oauthserver import OAuthServer
from tests.test_secrets import assert_hidden, assert_one_line, forms

CLIENT = "mailsync-test-client"
APP_SECRET = "app-secret-Zq81-do-not-show"


@pytest.fixture(scope="session")
def oauth_server():
    with OAuthServer() as server:
        server.add_client(CLIENT)
        yield server


@pytest.fixture(scope="session")
def oauth_dovecot(oauth_server):
    with private_dovecot(oauth2_introspection_url=oauth_server.introspect_url) as server:
        yield server


@pytest.fixture
def lifetime(oauth_server):
    """Set the access-token lifetime of the session's server for one test."""
    before = oauth_server.access_lifetime

    def set_lifetime(seconds: float) -> None:
        oauth_server.access_lifetime = seconds
    yield set_lifetime
    oauth_server.access_lifetime = before


class OAuthAccount:
    """One account name and state directory on the oauth Dovecot; the config can be
    rewritten (protocol, auth) while the stored sign-in stays."""

    def __init__(self, dovecot: Dovecot, server: OAuthServer, base: Path, **keys) -> None:
        self.dovecot, self.server, self.base = dovecot, server, base
        self.user = dovecot.new_user()
        self.state_dir = base / "state"
        self.config = base / "config.toml"
        self.env: dict[str, str] = {}
        self.keys = {"user": self.user, "host": dovecot.host,
                     "ca_file": str(dovecot.ca_file), "state_dir": str(self.state_dir),
                     "oauth2_client_id": CLIENT,
                     "oauth2_authorize_url": server.authorize_url,
                     "oauth2_token_url": server.token_url,
                     "oauth2_device_url": server.device_url,
                     "oauth2_scopes": ["mail"], "token_store": "file", "timeout": 20}
        self.keys.update(keys)
        self.outputs: list[str | bytes] = []
        self.use("imap", "xoauth2")

    def use(self, protocol: str, auth: str) -> None:
        self.protocol = protocol
        self.maildir = self.base / f"Mail-{protocol}"
        port = self.dovecot.imaps_port if protocol == "imap" else self.dovecot.pop3s_port
        write_config(self.config, "test", {**self.keys, "protocol": protocol, "auth": auth,
                                           "port": port, "maildir": str(self.maildir)})

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 120):
        done = subprocess.run(cli_command("-c", str(self.config), *args),
                              env=cli_env(self.env), capture_output=True, timeout=timeout,
                              input=stdin if stdin is not None else b"")
        from tests.conftest import CliResult
        result = CliResult(done.returncode, done.stdout.decode(), done.stderr.decode())
        self.outputs += [result.out, result.err]
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(cli_command("-c", str(self.config), *args),
                                env=cli_env(self.env), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def local(self) -> list[bytes]:
        return [p.read_bytes() for sub in ("new", "cur") if (self.maildir / sub).is_dir()
                for p in sorted((self.maildir / sub).iterdir())]

    def secret_forms(self) -> list[bytes]:
        out: list[bytes] = []
        for secret in self.server.all_secrets() + [APP_SECRET]:
            out += forms(self.user, secret)
            out.append(base64_oauthbearer(self.user, secret))
        return out

    def assert_nothing_leaked(self) -> None:
        """Outputs so far and every state file but the token store hold no secret."""
        files = [p for p in self.state_dir.rglob("*")
                 if p.is_file() and p.name != "oauth2-token.json"]
        assert_hidden(self.secret_forms(), *self.outputs, *[p.read_bytes() for p in files])


def base64_oauthbearer(user: str, secret: str) -> bytes:
    import base64
    return base64.b64encode(f"n,a={user},\x01auth=Bearer {secret}\x01\x01".encode())


@pytest.fixture
def oauth_account(oauth_dovecot, oauth_server, tmp_path):
    counter = iter(range(100))

    def make(**keys) -> OAuthAccount:
        base = tmp_path / f"oauth{next(counter)}"
        base.mkdir()
        return OAuthAccount(oauth_dovecot, oauth_server, base, **keys)
    return make


def _direct() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NoFollow(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Reader:
    """Collects a child's stderr in a thread; wait_for() a line matching a pattern."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc) -> None:
        for raw in proc.stderr:
            with self.cond:
                self.lines.append(raw.decode())
                self.cond.notify_all()
        with self.cond:
            self.lines.append("")
            self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = re.search(pattern, line)
                    if m:
                        return m
                if "" in self.lines:
                    raise AssertionError("".join(self.lines))
                left = deadline - time.monotonic()
                assert left > 0, "".join(self.lines)
                self.cond.wait(left)

    def text(self) -> str:
        self.thread.join(10)
        return "".join(self.lines)


def _finish(proc: subprocess.Popen) -> bytes:
    """Wait for the child; its stderr belongs to a Reader."""
    proc.stdin.close()
    out = proc.stdout.read()
    proc.wait(60)
    return out


def _titles(pid: int, stop: threading.Event, seen: list[bytes]) -> None:
    while not stop.is_set():
        try:
            seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            return
        time.sleep(0.02)


def login(acct: OAuthAccount, how: str) -> None:
    """`mailsync -vv login` driven the way a user would for each flow."""
    args = ["-vv", "login", "--no-browser", "test"]
    if how == "device":
        args.insert(2, "--device")
    if how == "client_credentials":
        result = acct.run(*args)
        assert result.code == 0, result.err
        assert "client credentials" in result.out
        assert "grant_type=client_credentials" in result.err         # the -vv trace
        assert "client_secret=<redacted>" in result.err
        return
    proc = acct.popen(*args)
    titles: list[bytes] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_titles, args=(proc.pid, stop, titles), daemon=True)
    watcher.start()
    reader = Reader(proc)
    try:
        if how == "device":
            m = reader.wait_for(r"open (\S+) and enter the code (\S+)")
            with _direct().open(f"{m.group(1)}?user_code={m.group(2)}&user={acct.user}",
                                timeout=10) as answer:
                assert json.load(answer)["approved"]
        else:
            url = reader.wait_for(r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)").group(1)
            if how == "loopback":
                # The "browser": the fake approves and redirects to mailsync's listener.
                with _direct().open(url, timeout=10) as page:
                    assert b"signed in" in page.read()
            else:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                     _NoFollow())
                try:
                    opener.open(url, timeout=10)
                    raise AssertionError("no redirect")
                except urllib.error.HTTPError as redirect:
                    assert redirect.code == 302
                    target = redirect.headers["Location"]
                # The browser could not reach this machine: the user pastes the address.
                proc.stdin.write(target.encode() + b"\n")
                proc.stdin.flush()
        out = _finish(proc)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = reader.text()
    acct.outputs += [out, err, *titles]
    assert proc.returncode == 0, err
    assert b"signed in" in out and b"refresh token stored in" in out, out
    # The -vv trace shows the exchange with every secret-bearing field redacted.
    assert "refresh_token=<redacted>" in err and "access_token=<redacted>" in err, err
    assert ("device_code=<redacted>" if how == "device" else "code=<redacted>") in err


def run_watched(acct: OAuthAccount, *args: str):
    """A run whose process title is sampled all along (kept with the outputs)."""
    from tests.conftest import CliResult
    proc = acct.popen(*args)
    titles: list[bytes] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_titles, args=(proc.pid, stop, titles), daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        stop.set()
        watcher.join(5)
    assert titles
    acct.outputs += titles
    result = CliResult(proc.returncode, out.decode(), err.decode())
    acct.outputs += [result.out, result.err]
    return result


FLOWS = ["loopback", "pasted", "device", "client_credentials"]


@pytest.mark.parametrize("how", FLOWS)
def test_login_then_imap_sync_and_pop3_fetch_with_both_mechanisms(oauth_account,
                                                                   oauth_server, how):
    keys = {}
    if how == "client_credentials":
        acct = oauth_account()
        app = f"app-{acct.user}"
        oauth_server.add_client(app, APP_SECRET, app_user=acct.user)
        acct.keys.update(oauth2_client_id=app, oauth2_flow="client_credentials",
                         oauth2_client_secret_command=f"printf %s {APP_SECRET}")
        acct.use("imap", "xoauth2")
    else:
        acct = oauth_account(**keys)
    login(acct, how)
    token_file = acct.state_dir / "oauth2-token.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    signed_in = oauth_server.count("/authorize") + oauth_server.count("/device")
    for n, (protocol, auth) in enumerate([("imap", "xoauth2"), ("imap", "oauthbearer"),
                                          ("pop3", "xoauth2"), ("pop3", "oauthbearer")]):
        acct.use(protocol, auth)
        mail = make_corpus(2, seed=n + 1)
        acct.dovecot.seed(acct.user, mail)
        command = "sync" if protocol == "imap" else "fetch"
        result = run_watched(acct, "-vv", "--no-progress", command)
        assert result.code == 0, result.err
        # Dovecot's oauth2 passdb verified the token with the fake server:
        logins = f"Login: user=<{acct.user}>, method={auth.upper()}"
        assert acct.dovecot.log_tail(4000).count(logins) >= 1, (protocol, auth)
        assert len(acct.local()) == [2, 4, 6, 8][n], (protocol, auth)
    # POP3 fetch deleted what it downloaded; IMAP had it all before.
    assert acct.dovecot.server_messages(acct.user) == []
    check = acct.run("-vv", "check")
    assert check.code == 0, check.err
    assert oauth_server.count("/authorize") + oauth_server.count("/device") == signed_in
    acct.assert_nothing_leaked()


def test_short_tokens_ten_runs_in_a_row_without_a_new_login(oauth_account, oauth_server,
                                                           lifetime):
    lifetime(5)
    acct = oauth_account()
    login(acct, "loopback")
    logins = oauth_server.count("/authorize")
    refreshes = oauth_server.count("/token", grant_type="refresh_token")
    for n in range(10):
        # The server's clock moves on 6 s: every access token it gave so far is dead
        # (mailsync's own clock may still think it fresh: the refused token is
        # refreshed once more and the login retried).
        oauth_server.advance(6)
        acct.dovecot.seed(acct.user, make_corpus(1, seed=100 + n))
        result = acct.run("-vv", "--no-progress", "run")
        assert result.code == 0, (n, result.err[-3000:])
        assert len(acct.local()) == n + 1
    assert oauth_server.count("/authorize") == logins
    assert oauth_server.count("/token", grant_type="refresh_token") >= refreshes + 10
    acct.assert_nothing_leaked()


def test_a_revoked_sign_in_ends_with_77_and_one_line(oauth_account, oauth_server, lifetime):
    lifetime(5)
    acct = oauth_account()
    login(acct, "pasted")
    acct.dovecot.seed(acct.user, make_corpus(3, seed=7))
    assert acct.run("--no-progress", "sync").code == 0
    before = acct.local()
    acct.dovecot.seed(acct.user, make_corpus(2, seed=8))
    assert oauth_server.revoke(acct.user) >= 1
    for command in ("sync", "run", "check"):
        result = acct.run("--no-progress", command)
        assert_one_line(result, 77, "account test", "run `mailsync login test`")
    result = acct.run("-vv", "--no-progress", "sync")
    assert result.code == 77
    assert result.err.strip().splitlines()[-1].endswith("(run `mailsync login test`)")
    assert acct.local() == before                      # nothing half-synced
    assert len(acct.dovecot.server_messages(acct.user)) == 5
    # POP3 likewise.
    acct.use("pop3", "oauthbearer")
    result = acct.run("--no-progress", "fetch")
    assert_one_line(result, 77, "run `mailsync login test`")
    assert acct.local() == [] and len(acct.dovecot.server_messages(acct.user)) == 5
    # Signing in again mends it.
    login(acct, "loopback")
    assert acct.run("--no-progress", "fetch").code == 0
    assert len(acct.local()) == 5
    acct.assert_nothing_leaked()


def test_a_token_the_server_refuses_is_refreshed_once_more(oauth_account, oauth_server):
    acct = oauth_account()
    login(acct, "loopback")
    oauth_server.expire_access_tokens()      # the stored one looks fresh but is dead
    before = oauth_server.count("/token", grant_type="refresh_token")
    for protocol in ("imap", "pop3"):
        acct.use(protocol, "xoauth2")
        oauth_server.expire_access_tokens()
        result = acct.run("-vv", "--no-progress", "sync" if protocol == "imap" else "fetch")
        assert result.code == 0, result.err[-2000:]
    assert oauth_server.count("/token", grant_type="refresh_token") == before + 2
    acct.assert_nothing_leaked()


def test_keyring_store_with_a_real_file_backend(oauth_account, oauth_server, tmp_path):
    import keyrings.alt  # noqa: F401 (the test extra installs it)
    acct = oauth_account(token_store="keyring")
    data = tmp_path / "xdg-data"
    acct.env = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
                "XDG_DATA_HOME": str(data)}
    acct.use("imap", "oauthbearer")
    login(acct, "device")
    assert not (acct.state_dir / "oauth2-token.json").exists()
    keyring_files = [p for p in data.rglob("*") if p.is_file()]
    assert keyring_files and any(b"oauth2_3atest" in p.read_bytes() for p in keyring_files)
    acct.dovecot.seed(acct.user, make_corpus(2, seed=3))
    result = acct.run("-vv", "--no-progress", "sync")
    assert result.code == 0, result.err
    assert len(acct.local()) == 2
    acct.assert_nothing_leaked()


def test_keyring_required_but_missing_is_a_config_error(oauth_account, tmp_path):
    acct = oauth_account(token_store="keyring")
    acct.env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    acct.use("imap", "xoauth2")
    result = acct.run("sync")
    assert_one_line(result, 78, "no keyring is usable")


def test_a_wrong_client_secret_is_one_line_and_never_shown(oauth_account, oauth_server):
    acct = oauth_account()
    app = f"app-{acct.user}"
    oauth_server.add_client(app, APP_SECRET, app_user=acct.user)
    acct.keys.update(oauth2_client_id=app, oauth2_flow="client_credentials",
                     oauth2_client_secret_command="printf %s wrong-" + APP_SECRET)
    acct.use("pop3", "xoauth2")
    result = acct.run("-vv", "fetch")
    assert_one_line(result, 77, "client secret")
    result = acct.run("login", "test")
    assert_one_line(result, 77, "client secret")
    traced = acct.run("-vv", "login", "test")
    assert traced.code == 77 and "client_secret=<redacted>" in traced.err
    assert_hidden(forms(acct.user, "wrong-" + APP_SECRET) + acct.secret_forms(),
                  *acct.outputs)


def test_not_signed_in_yet_says_to_log_in(oauth_account):
    acct = oauth_account()
    result = acct.run("sync")
    assert_one_line(result, 77, "not signed in", "run `mailsync login test`")


def test_a_declined_browser_sign_in_stores_nothing(oauth_account, oauth_server):
    acct = oauth_account()
    oauth_server.deny_next = True
    proc = acct.popen("login", "--no-browser", "test")
    reader = Reader(proc)
    url = reader.wait_for(r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)").group(1)
    with _direct().open(url, timeout=10) as page:
        assert b"not completed" in page.read()
    _finish(proc)
    assert proc.returncode == 77, reader.text()
    assert "access_denied" in reader.text()
    assert not (acct.state_dir / "oauth2-token.json").exists()


def test_password_command_stores_in_the_keyring_for_password_keyring(make_account,
                                                                      tmp_path):
    import keyrings.alt  # noqa: F401 (the test extra installs it)
    env = {"PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
           "XDG_DATA_HOME": str(tmp_path / "xdg")}
    acct: AccountSetup = make_account("imap", password=None, password_keyring=True)
    acct.server.seed(acct.user, make_corpus(2, seed=5))
    missing = acct.run("sync", env=env)
    assert_one_line(missing, 77, "no password stored", "mailsync password test")
    done = subprocess.run(cli_command("-c", str(acct.config), "password", "test"),
                          env=cli_env(env), input=acct.server.password.encode() + b"\n",
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b"password stored in the system keyring" in done.stdout
    result = acct.run("-vv", "--no-progress", "sync", env=env)
    assert result.code == 0, result.err
    assert len(acct.local_messages()) == 2
    assert_hidden(forms(acct.user, acct.server.password), done.stdout, done.stderr,
                  result.out, result.err, missing.err, folders=(acct.state_dir,))


def test_a_declined_device_sign_in_is_77_and_stores_nothing(oauth_account):
    acct = oauth_account()
    proc = acct.popen("login", "--device", "test")
    reader = Reader(proc)
    m = reader.wait_for(r"open (\S+) and enter the code (\S+)")
    with _direct().open(f"{m.group(1)}?user_code={m.group(2)}&deny=1", timeout=10):
        pass
    _finish(proc)
    assert proc.returncode == 77, reader.text()
    assert "declined" in reader.text()
    assert not (acct.state_dir / "oauth2-token.json").exists()


def test_a_pasted_address_of_another_sign_in_is_refused(oauth_account):
    acct = oauth_account()
    proc = acct.popen("login", "--no-browser", "test")
    reader = Reader(proc)
    reader.wait_for(r"^(http://127\.0\.0\.1:\d+/authorize\?\S+)")
    proc.stdin.write(b"http://127.0.0.1:1/?code=code-from-elsewhere&state=forged\n")
    proc.stdin.flush()
    _finish(proc)
    text = reader.text()
    assert proc.returncode == 77, text
    assert "not the answer to this sign-in" in text
    assert "code-from-elsewhere" not in text
    assert not (acct.state_dir / "oauth2-token.json").exists()
