"""OAuth2 configuration, token refresh on a fake clock, and the translation of provider
refusals -- in process, against the fake authorization server (no mail server)."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest

from mailsync import oauth
from mailsync.config import load_config
from mailsync.errors import AuthError, ConfigError
from mailsync.secrets_store import TokenStore
from tests.conftest import write_config
from tests.oauthserver import OAuthServer

CLIENT = "unit-client"


@pytest.fixture
def server():
    with OAuthServer(access_lifetime=5) as srv:
        srv.add_client(CLIENT)
        yield srv


def account(tmp_path: Path, **keys):
    settings = {"protocol": "imap", "host": "127.0.0.1", "user": "me@example.org",
                "state_dir": str(tmp_path / "state"), "maildir": str(tmp_path / "Mail"),
                "oauth2_client_id": CLIENT, "token_store": "file"}
    settings.update(keys)
    path = write_config(tmp_path / "config.toml", "acct", settings)
    return load_config(path).accounts["acct"]


def with_server(tmp_path: Path, server: OAuthServer, **keys):
    return account(tmp_path, oauth2_authorize_url=server.authorize_url,
                   oauth2_token_url=server.token_url, oauth2_device_url=server.device_url,
                   oauth2_scopes=["mail"], **keys)


def signed_in(acct, server: OAuthServer, now: float) -> dict:
    """A sign-in as `login` stores it, made directly on the fake server."""
    answer = server._issue(acct.user, CLIENT, "mail", None, True)
    record = {"access_token": answer["access_token"], "refresh_token":
              answer["refresh_token"], "expires_at": now + 5, "lifetime": 5.0}
    store = TokenStore(acct)
    with store.locked(create=True):
        store.save(record)
    return record


# Configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("provider,protocol,host", [
    ("gmail", "imap", "imap.gmail.com"), ("gmail", "pop3", "pop.gmail.com"),
    ("microsoft", "imap", "outlook.office365.com"), ("yahoo", "imap", "imap.mail.yahoo.com"),
    ("fastmail", "pop3", "pop.fastmail.com")])
def test_a_provider_fills_in_the_server_and_the_sign_in(tmp_path, provider, protocol, host):
    path = write_config(tmp_path / "c.toml", "a", {"provider": provider, "protocol": protocol,
                                                   "user": "me", "oauth2_client_id": "x"})
    acct = load_config(path).accounts["a"]
    assert (acct.host, acct.tls, acct.auth) == (host, "implicit", "xoauth2")
    assert acct.port == (993 if protocol == "imap" else 995)
    ep = oauth.endpoints(acct)
    assert ep.token.startswith("https://") and ep.scopes


def test_microsoft_asks_for_offline_access_and_uses_the_tenant(tmp_path):
    path = write_config(tmp_path / "c.toml", "a", {"provider": "microsoft", "user": "me",
                                                   "oauth2_client_id": "x",
                                                   "oauth2_tenant": "contoso.example"})
    ep = oauth.endpoints(load_config(path).accounts["a"])
    assert "offline_access" in ep.scopes
    assert ep.token == "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    assert ep.redirect_host == "localhost"


def test_client_credentials_use_the_default_scope_and_need_a_secret(tmp_path):
    keys = {"provider": "microsoft", "user": "box@contoso.example", "oauth2_client_id": "x",
            "oauth2_flow": "client_credentials"}
    with pytest.raises(ConfigError, match="oauth2_client_secret_command"):
        load_config(write_config(tmp_path / "c.toml", "a", keys))
    keys["oauth2_client_secret_command"] = "echo s"
    acct = load_config(write_config(tmp_path / "c.toml", "a", keys)).accounts["a"]
    assert oauth.endpoints(acct).scopes == ("https://outlook.office365.com/.default",)


def test_a_provider_without_a_client_id_keeps_password_logins(tmp_path):
    path = write_config(tmp_path / "c.toml", "a", {"provider": "fastmail", "user": "me",
                                                   "password_keyring": True})
    acct = load_config(path).accounts["a"]
    assert (acct.host, acct.auth, acct.password_keyring) == ("imap.fastmail.com", "login", True)


@pytest.mark.parametrize("url,ok", [
    ("https://login.example.com/token", True), ("http://127.0.0.1:8080/token", True),
    ("http://localhost:9/t", True), ("http://[::1]:9/t", True),
    ("http://login.example.com/token", False), ("ftp://x/y", False), ("nonsense", False)])
def test_endpoints_are_https_except_on_loopback(tmp_path, url, ok):
    keys = {"protocol": "imap", "host": "h", "user": "me", "oauth2_client_id": "x",
            "oauth2_token_url": url, "oauth2_authorize_url": "https://a.example/auth",
            "oauth2_scopes": ["s"]}
    path = write_config(tmp_path / "c.toml", "a", keys)
    if ok:
        assert load_config(path).accounts["a"].auth == "xoauth2"
    else:
        with pytest.raises(ConfigError, match="oauth2_token_url"):
            load_config(path)


@pytest.mark.parametrize("keys,words", [
    ({"provider": "hotmail"}, "is not one of"),
    ({"oauth2_token_command": "x"}, "both oauth2_token_command and oauth2_client_id"),
    ({"provider": None, "host": "h", "protocol": "imap"}, "no token endpoint"),
    ({"token_store": "cloud"}, "token_store"),
])
def test_bad_oauth_configs_are_refused_with_the_key(tmp_path, keys, words):
    settings = {"provider": "gmail", "user": "me", "oauth2_client_id": "x", **keys}
    settings = {k: v for k, v in settings.items() if v is not None}
    path = write_config(tmp_path / "c.toml", "a", settings)
    with pytest.raises(ConfigError, match=words) as refused:
        load_config(path)
    assert refused.value.exit_code == 78


def test_xoauth2_without_client_id_or_command_says_what_to_add(tmp_path):
    path = write_config(tmp_path / "c.toml", "a", {"protocol": "imap", "host": "h",
                                                   "user": "me", "auth": "xoauth2"})
    with pytest.raises(ConfigError, match="oauth2_client_id or oauth2_token_command"):
        load_config(path)


# Tokens on a fake clock ----------------------------------------------------------------------

def test_the_access_token_is_reused_then_refreshed_before_it_expires(tmp_path, server):
    acct = with_server(tmp_path, server)
    now = [1000.0]
    first = signed_in(acct, server, now[0])
    assert oauth.access_token(acct, clock=lambda: now[0]) == first["access_token"]
    now[0] += 2.0      # 3 s left of 5: more than half the lifetime, still used
    assert oauth.access_token(acct, clock=lambda: now[0]) == first["access_token"]
    assert server.count("/token") == 0
    now[0] += 1.0      # 2 s left: under half its lifetime, refreshed first
    second = oauth.access_token(acct, clock=lambda: now[0])
    assert second != first["access_token"]
    assert server.count("/token", grant_type="refresh_token") == 1
    assert server.introspect(second)["active"]
    record = TokenStore(acct).load()
    assert record["refresh_token"] == first["refresh_token"]
    assert record["expires_at"] == pytest.approx(now[0] + 5)
    path = acct.state_dir / "oauth2-token.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_rotated_refresh_token_is_kept(tmp_path, server):
    server.rotate_refresh = True
    acct = with_server(tmp_path, server)
    first = signed_in(acct, server, 0.0)
    oauth.access_token(acct, clock=lambda: 100.0)
    record = TokenStore(acct).load()
    assert record["refresh_token"] != first["refresh_token"]
    oauth.access_token(acct, clock=lambda: 200.0)      # the new one works, the old is dead
    assert server.count("/token", grant_type="refresh_token") == 2


def test_a_refused_token_is_replaced_even_if_it_looks_fresh(tmp_path, server):
    acct = with_server(tmp_path, server)
    first = signed_in(acct, server, 1000.0)
    fresh = oauth.token_after_refusal(acct, first["access_token"], clock=lambda: 1000.0)
    assert fresh != first["access_token"]
    # Another process already refreshed: its token is taken, no second refresh.
    again = oauth.token_after_refusal(acct, first["access_token"], clock=lambda: 1000.0)
    assert again == fresh
    assert server.count("/token", grant_type="refresh_token") == 1


def test_a_revoked_refresh_token_says_to_log_in_again(tmp_path, server):
    acct = with_server(tmp_path, server)
    first = signed_in(acct, server, 0.0)
    server.revoke()
    with pytest.raises(AuthError) as refused:
        oauth.access_token(acct, clock=lambda: 100.0)
    text = str(refused.value)
    assert refused.value.exit_code == 77
    assert text.endswith("(run `mailsync login acct`)")
    assert "revoked or has expired" in text            # AADSTS70000 explained
    assert first["refresh_token"] not in text


def test_without_a_sign_in_a_run_says_to_log_in(tmp_path, server):
    acct = with_server(tmp_path, server)
    with pytest.raises(AuthError, match=r"not signed in .*mailsync login acct"):
        oauth.access_token(acct)


def test_an_unreachable_token_endpoint_is_69(tmp_path, server):
    acct = with_server(tmp_path, server)
    signed_in(acct, server, 0.0)
    gone = replace(acct, oauth2_token_url="http://127.0.0.1:9/token")
    with pytest.raises(Exception) as failed:
        oauth.access_token(gone, clock=lambda: 100.0)
    assert failed.value.exit_code == 69


@pytest.mark.parametrize("text,words", [
    ("AADSTS70008: The provided authorization code or refresh token has expired", "expired"),
    ("AADSTS65001: The user or administrator has not consented", "consent"),
    ("AADSTS7000215: Invalid client secret provided", "client secret"),
    ("NO AUTHENTICATE failed: Basic authentication is disabled", "oauth2_client_id"),
    ("NO User is authenticated but not connected.", "mailbox"),
    ("[ALERT] Application-specific password required", "app password"),
])
def test_known_refusals_are_translated(text, words):
    assert words in (oauth.explain(text) or "")


def test_the_loopback_listener_never_logs_the_code(capsys):
    catcher = oauth._Catcher("st")
    import threading
    import urllib.request
    thread = threading.Thread(target=catcher.handle_request, daemon=True)
    thread.start()
    port = catcher.server_address[1]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/?code=SECRET-CODE&state=st") as page:
        assert b"signed in" in page.read()
    thread.join(5)
    catcher.server_close()
    assert catcher.query["code"] == ["SECRET-CODE"]
    captured = capsys.readouterr()
    assert "SECRET-CODE" not in captured.out + captured.err


# Where the sign-in is kept ----------------------------------------------------------------

@pytest.fixture
def fresh_keyring(monkeypatch, tmp_path):
    """keyring picks its backend again, with no keyringrc and a private data dir."""
    import keyring.core
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    yield monkeypatch
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)


def test_auto_never_takes_a_last_resort_keyring_nobody_chose(tmp_path, fresh_keyring):
    # keyrings.alt (installed for the tests) ranks its plain-text file as a last resort:
    # "auto" prefers the 0600 file in the state directory to it.
    acct = account(tmp_path, oauth2_authorize_url="https://a.example/a",
                   oauth2_token_url="https://a.example/t", oauth2_scopes=["s"],
                   token_store="auto")
    store = TokenStore(acct)
    assert store.keyring is None and "oauth2-token.json (mode 0600)" in store.where()
    store.save({"refresh_token": "r"})
    assert stat.S_IMODE((acct.state_dir / "oauth2-token.json").stat().st_mode) == 0o600


def test_auto_takes_a_keyring_the_user_named_and_reads_it_back(tmp_path, fresh_keyring):
    fresh_keyring.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    acct = account(tmp_path, oauth2_authorize_url="https://a.example/a",
                   oauth2_token_url="https://a.example/t", oauth2_scopes=["s"],
                   token_store="auto")
    store = TokenStore(acct)
    assert store.keyring is not None and "system keyring" in store.where()
    store.save({"refresh_token": "r-in-keyring"})
    assert not (acct.state_dir / "oauth2-token.json").exists()
    assert TokenStore(acct).load() == {"refresh_token": "r-in-keyring"}


def test_gmail_refusal_mentions_the_seven_day_testing_limit(tmp_path, server):
    server.refresh_refusal = "Token has been expired or revoked."
    acct = with_server(tmp_path, server, provider="gmail")
    signed_in(acct, server, 0.0)
    server.revoke()
    with pytest.raises(AuthError) as refused:
        oauth.access_token(acct, clock=lambda: 100.0)
    text = str(refused.value)
    assert "Testing" in text and "7 days" in text and "Token has been expired" in text
    assert text.endswith("(run `mailsync login acct`)") and "\n" not in text
