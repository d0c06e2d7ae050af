"""Built-in OAuth2 sign-in: `mailsync login` and the access token of every run.

Flows (RFC 6749, 7636, 8252, 8628): the authorization code with PKCE (S256) and a
loopback redirect (http://127.0.0.1:PORT/, or the address the browser was sent to,
pasted back), the device code, and client credentials (organisation accounts). HTTP is
urllib from the standard library: four form POSTs and a loopback listener need nothing
more, and keep `mailsync run` free of extra imports.

Tokens: a run takes the stored access token while it has more than REFRESH_MARGIN (at
most half its lifetime) to live, else refreshes it with the refresh token (which the
provider may rotate: the new one is stored). When the server refuses a token,
token_after_refusal() refreshes once more. A refresh the provider refuses (invalid_grant:
revoked, expired, consent withdrawn) is an AuthError (exit 77) whose one line says to run
`mailsync login ACCOUNT`.

Endpoints must be https, except on loopback addresses. No token, refresh token, code or
client secret is ever printed, traced or put into an error message.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import select
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from mailsync import __version__
from mailsync.config import Account, _run_secret_command
from mailsync.errors import (AuthError, ConfigError, ProtocolError, TemporaryError,
                             UnreachableError)
from mailsync.providers import PRESETS, endpoint_problem, is_loopback

REFRESH_MARGIN = 90.0          # refresh this long before expiry (pizauth's choice)
HTTP_TIMEOUT = 30.0
LOGIN_TIMEOUT = 600.0          # how long `login` waits for the browser or the device
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

Clock = Callable[[], float]

# -vv: the HTTP exchanges, every secret-bearing value shown as <redacted>.
TRACE: Callable[[str, str], None] | None = None
SECRET_FIELDS = ("code", "code_verifier", "refresh_token", "client_secret", "device_code",
                 "access_token", "id_token")


def _traced(form: dict) -> str:
    return " ".join(f"{k}={'<redacted>' if k in SECRET_FIELDS else v}"
                    for k, v in form.items())


# Configuration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoints:
    authorize: str | None
    token: str
    device: str | None
    scopes: tuple[str, ...]
    redirect_host: str


def _resolved(raw_get, provider: str | None, tenant: str, flow: str) -> dict:
    preset = PRESETS.get(provider or "")
    fill = (lambda url: url.replace("{tenant}", tenant) if url else url)
    scopes = tuple(raw_get("oauth2_scopes") or ())
    if not scopes and preset is not None:
        scopes = preset.app_scopes if flow == "client_credentials" and preset.app_scopes \
            else preset.scopes
    return {
        "oauth2_authorize_url": raw_get("oauth2_authorize_url")
        or (fill(preset.authorize_url) if preset else None),
        "oauth2_token_url": raw_get("oauth2_token_url")
        or (fill(preset.token_url) if preset else None),
        "oauth2_device_url": raw_get("oauth2_device_url")
        or (fill(preset.device_url) if preset else None),
        "scopes": scopes,
        "redirect_host": preset.redirect_host if preset else "127.0.0.1",
    }


def endpoints(account: Account) -> Endpoints:
    r = _resolved(lambda k: getattr(account, k), account.provider, account.oauth2_tenant,
                  account.oauth2_flow)
    return Endpoints(r["oauth2_authorize_url"], r["oauth2_token_url"], r["oauth2_device_url"],
                     r["scopes"], r["redirect_host"])


def check_oauth_config(raw: dict, section: str, where: Callable[..., str]) -> None:
    """Config-time checks of a built-in OAuth2 account (ConfigError, exit 78)."""
    flow = raw.get("oauth2_flow", "authorization_code")
    r = _resolved(raw.get, raw.get("provider"), raw.get("oauth2_tenant", "common"), flow)
    if not r["oauth2_token_url"]:
        raise ConfigError(f"{where(section)}: [{section}] has oauth2_client_id but no "
                          "token endpoint", "set provider, or oauth2_token_url and "
                          "oauth2_authorize_url (or oauth2_device_url)")
    for key in ("oauth2_authorize_url", "oauth2_token_url", "oauth2_device_url"):
        url = r[key]
        problem = endpoint_problem(url) if url else None
        if problem:
            raise ConfigError(f"{where(section, key)}: {key} {problem}",
                              f"fix {key} (https://...)")
    if flow == "client_credentials" and "oauth2_client_secret_command" not in raw:
        raise ConfigError(f"{where(section, 'oauth2_flow')}: oauth2_flow = "
                          "\"client_credentials\" needs oauth2_client_secret_command",
                          "add the command that prints the client secret")
    if not r["scopes"]:
        raise ConfigError(f"{where(section)}: [{section}] has no OAuth2 scopes",
                          "set provider or oauth2_scopes")


def builtin(account: Account) -> bool:
    return account.auth in ("xoauth2", "oauthbearer") and account.oauth2_client_id is not None


def _client_secret(account: Account) -> str | None:
    if account.oauth2_client_secret_command is None:
        return None
    return _run_secret_command(account, "oauth2_client_secret_command",
                               account.oauth2_client_secret_command)


def _login_hint(account: Account) -> str:
    return f"run `mailsync login {account.name}`"


# HTTP ---------------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):   # a token endpoint never redirects
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers: list = [_NoRedirect(), urllib.request.HTTPSHandler(
        context=ssl.create_default_context())]
    if is_loopback(urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))   # never a proxy for loopback
    return urllib.request.build_opener(*handlers)


def post_form(account: Account, url: str, form: dict[str, str]) -> tuple[int, dict]:
    """POST form to url: (HTTP status, JSON object). Network failures are mapped to
    the contract's exit codes; the form (which holds secrets) is never shown."""
    label = f"account {account.name}"
    host = urlsplit(url).hostname or url
    problem = endpoint_problem(url)
    if problem:
        raise ConfigError(f"{label}: OAuth2 endpoint {url} {problem}", "fix the URL")
    request = urllib.request.Request(
        url, data=urlencode(form).encode(), method="POST",
        headers={"Accept": "application/json",
                 "Content-Type": "application/x-www-form-urlencoded",
                 "User-Agent": f"mailsync/{__version__}"})
    if TRACE is not None:
        TRACE("C", f"POST {url} {_traced(form)}")
    try:
        with _opener(url).open(request, timeout=min(account.timeout, HTTP_TIMEOUT)) as resp:
            status, body = resp.status, resp.read(1 << 20)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1 << 20)
        exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise AuthError(f"{label}: the certificate of {host} is not trusted: "
                            f"{reason.verify_message}", "check the endpoint URL") from None
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise TemporaryError(f"{label}: {host} did not answer in time",
                                 "retry later") from None
        raise UnreachableError(f"{label}: cannot reach {host}: "
                               f"{getattr(reason, 'strerror', None) or reason}",
                               "check the network and the endpoint URL") from None
    except (TimeoutError, socket.timeout):
        raise TemporaryError(f"{label}: {host} did not answer in time", "retry later") from None
    except OSError as exc:
        raise TemporaryError(f"{label}: connection to {host} failed: "
                             f"{exc.strerror or type(exc).__name__}", "retry later") from None
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError:
        data = None
    if TRACE is not None:
        TRACE("S", f"HTTP {status} " + (_traced(data) if isinstance(data, dict) else
                                         f"({len(body)} bytes, not JSON)"))
    if not isinstance(data, dict):
        if status >= 500:
            raise TemporaryError(f"{label}: {host} failed (HTTP {status})", "retry later")
        raise ProtocolError(f"{label}: {host} did not answer with JSON (HTTP {status})",
                            "check the OAuth2 endpoint URLs")
    return status, data


def _words(data: dict, *secret_values: str | None) -> str:
    """The provider's error and description, cut short and with secrets removed."""
    text = str(data.get("error", "error"))
    desc = data.get("error_description")
    if desc:
        text += f": {str(desc).splitlines()[0][:200]}"
    for value in secret_values:
        if value:
            text = text.replace(value, "<redacted>")
    return text


# What providers' refusals mean -------------------------------------------------------------

AADSTS_HINTS = {
    "AADSTS50076": "multi-factor sign-in is required",
    "AADSTS50079": "multi-factor sign-in is required",
    "AADSTS50173": "the sign-in ended when the password changed",
    "AADSTS70000": "the sign-in was revoked or has expired",
    "AADSTS70008": "the sign-in has expired",
    "AADSTS700082": "the sign-in expired after 90 days without use",
    "AADSTS700084": "the sign-in of this single-page app expired",
    "AADSTS65001": "consent was not granted or was withdrawn",
    "AADSTS50020": "this account does not belong to the tenant; check oauth2_tenant",
    "AADSTS700016": "the app (oauth2_client_id) is not known in this tenant; check "
                    "oauth2_client_id and oauth2_tenant",
    "AADSTS7000215": "the client secret is wrong or expired; fix "
                     "oauth2_client_secret_command",
    "AADSTS7000218": "the app registration needs a client secret or must allow public "
                     "client flows (Authentication: \"Allow public client flows\")",
    "AADSTS90002": "the tenant does not exist; check oauth2_tenant",
    "AADSTS50011": "the redirect URI is not registered: add http://localhost as a "
                   "\"Mobile and desktop\" redirect URI",
}


def explain(text: str) -> str | None:
    """What to do about a provider's or mail server's refusal, when it is a known one."""
    for code, meaning in AADSTS_HINTS.items():
        if code + ":" in text or text.endswith(code) or code + " " in text:
            return meaning
    lower = text.lower()
    if "basic authentication is disabled" in lower or "basicauthblocked" in lower:
        return ("the provider turned password logins off: set provider and "
                "oauth2_client_id, then run `mailsync login ACCOUNT`")
    if "authenticated but not connected" in lower:
        return ("the token is valid but the mailbox is not open to it: for client "
                "credentials give the app's service principal FullAccess to the mailbox "
                "and set user to the mailbox address; else check that IMAP/POP is on "
                "for the mailbox")
    if "application-specific password required" in lower:
        return "use OAuth2 (provider = \"gmail\", oauth2_client_id) or an app password"
    return None


def refusal_hint(account: Account, server_text: str) -> str | None:
    """The hint for a mail server's login refusal, or None for the usual one."""
    known = explain(server_text)
    if known:
        return known.replace("ACCOUNT", account.name)
    if builtin(account):
        return (f"check that user is the signed-in address and the scopes allow "
                f"{account.protocol.upper()}; else {_login_hint(account)}")
    return None


# Tokens of a run ----------------------------------------------------------------------------

def _valid(record: dict | None, now: float) -> bool:
    if not record or not record.get("access_token"):
        return False
    expires = float(record.get("expires_at") or 0)
    lifetime = float(record.get("lifetime") or 3600)
    return now < expires - min(REFRESH_MARGIN, lifetime / 2)


def access_token(account: Account, clock: Clock = time.time) -> str:
    """The account's access token, refreshed first when it is about to expire."""
    from mailsync.secrets_store import TokenStore
    store = TokenStore(account)
    with store.locked():
        record = store.load()
        if _valid(record, clock()):
            return record["access_token"]
        return _renew(account, store, record, clock)["access_token"]


def token_after_refusal(account: Account, refused: str, clock: Clock = time.time) -> str:
    """The server refused token `refused`: a newer one (another process's, or a fresh
    refresh). Raises AuthError when no new token can be had."""
    from mailsync.secrets_store import TokenStore
    store = TokenStore(account)
    with store.locked():
        record = store.load()
        if record and record.get("access_token") not in (None, refused) \
                and _valid(record, clock()):
            return record["access_token"]
        return _renew(account, store, record, clock)["access_token"]


def _renew(account: Account, store, record: dict | None, clock: Clock) -> dict:
    ep = endpoints(account)
    if account.oauth2_flow == "client_credentials":
        form = {"grant_type": "client_credentials", "client_id": account.oauth2_client_id,
                "scope": " ".join(ep.scopes)}
        secret = _client_secret(account)
        form["client_secret"] = secret or ""
        new = _token_request(account, ep.token, form, clock, secret)
        store.save(new)
        return new
    refresh = (record or {}).get("refresh_token")
    if not refresh:
        raise AuthError(f"account {account.name}: not signed in (no refresh token stored)",
                        _login_hint(account))
    form = {"grant_type": "refresh_token", "refresh_token": refresh,
            "client_id": account.oauth2_client_id}
    secret = _client_secret(account)
    if secret:
        form["client_secret"] = secret
    new = _token_request(account, ep.token, form, clock, secret, refresh,
                         refreshing=True)
    new.setdefault("refresh_token", refresh)    # kept unless the provider rotated it
    store.save(new)
    return new


def _token_request(account: Account, url: str, form: dict, clock: Clock,
                   *secret_values: str | None, refreshing: bool = False) -> dict:
    started = clock()
    status, data = post_form(account, url, form)
    label = f"account {account.name}"
    if status == 200 and isinstance(data.get("access_token"), str) and data["access_token"]:
        try:
            lifetime = float(data.get("expires_in") or 3600)
        except (TypeError, ValueError):
            lifetime = 3600.0
        record = {"access_token": data["access_token"], "expires_at": started + lifetime,
                  "lifetime": lifetime}
        if isinstance(data.get("refresh_token"), str) and data["refresh_token"]:
            record["refresh_token"] = data["refresh_token"]
        return record
    if status >= 500 or data.get("error") in ("temporarily_unavailable", "server_error"):
        raise TemporaryError(f"{label}: the token endpoint failed (HTTP {status})",
                             "retry later")
    words = _words(data, *secret_values)
    known = explain(words)
    if data.get("error") == "invalid_client" or (known and "client" in known
                                                 and "AADSTS700016" not in words):
        raise AuthError(f"{label}: the provider refused the client: {words}",
                        known or "check oauth2_client_id and oauth2_client_secret_command")
    if refreshing or data.get("error") == "invalid_grant":
        what = known or "the sign-in has expired or was withdrawn"
        if account.provider == "gmail" and not known:
            what += " (an app left in \"Testing\" loses it after 7 days: publish it)"
        raise AuthError(f"{label}: {what} ({words})", _login_hint(account))
    raise AuthError(f"{label}: the provider refused the token request: {words}",
                    known or _login_hint(account))


# Sign-in --------------------------------------------------------------------------------------

Say = Callable[[str], None]


@dataclass
class LoginResult:
    where: str
    refresh_token: bool
    flow: str


def login(account: Account, say: Say, device: bool = False, open_browser: bool = True,
          stdin=None, clock: Clock = time.time) -> LoginResult:
    """Sign in with the configured flow and store the result; `say` shows the user what
    to do (never a secret)."""
    from mailsync.secrets_store import TokenStore
    if not builtin(account):
        raise ConfigError(f"account {account.name}: `login` needs the built-in OAuth2 "
                          "sign-in", "set oauth2_client_id (and provider, or the "
                          "oauth2_*_url keys) with auth = \"xoauth2\" or \"oauthbearer\"")
    store = TokenStore(account)
    ep = endpoints(account)
    if account.oauth2_flow == "client_credentials":
        with store.locked(create=True):
            _renew(account, store, None, clock)
        return LoginResult(store.where(), False, "client credentials")
    secret = _client_secret(account)
    if device:
        record = _device_flow(account, ep, secret, say, clock)
        flow = "device code"
    else:
        record = _code_flow(account, ep, secret, say, open_browser,
                            stdin if stdin is not None else sys.stdin, clock)
        flow = "authorization code"
    with store.locked(create=True):
        store.save(record)
    return LoginResult(store.where(), "refresh_token" in record, flow)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)[:96]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


class _Catcher(HTTPServer):
    """The loopback redirect target: takes one ?code=...&state=... (or ?error=...)."""

    def __init__(self, state: str) -> None:
        super().__init__(("127.0.0.1", 0), _CatchHandler)
        self.state = state
        self.query: dict[str, list[str]] | None = None
        self.got = threading.Event()


class _CatchHandler(BaseHTTPRequestHandler):
    server: _Catcher

    def do_GET(self) -> None:   # noqa: N802 (http.server's name)
        query = parse_qs(urlsplit(self.path).query)
        if query.get("state", [None])[0] != self.server.state or self.server.got.is_set():
            self._answer(404, "Not the sign-in this mailsync is waiting for.")
            return
        ok = "code" in query
        self._answer(200, "mailsync: signed in. You can close this window." if ok else
                     "mailsync: the sign-in was not completed. See the terminal.")
        self.server.query = query
        self.server.got.set()

    def _answer(self, status: int, text: str) -> None:
        body = f"<!doctype html><title>mailsync</title><p>{html.escape(text)}</p>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:   # the request line holds the code: never log it
        pass


def _code_flow(account: Account, ep: Endpoints, secret: str | None, say: Say,
               open_browser: bool, stdin, clock: Clock) -> dict:
    if not ep.authorize:
        raise ConfigError(f"account {account.name}: no authorization endpoint",
                          "set oauth2_authorize_url, or sign in with `mailsync login "
                          f"--device {account.name}`")
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(24)
    catcher = _Catcher(state)
    redirect_uri = f"http://{ep.redirect_host}:{catcher.server_address[1]}/"
    params = {"response_type": "code", "client_id": account.oauth2_client_id,
              "redirect_uri": redirect_uri, "scope": " ".join(ep.scopes), "state": state,
              "code_challenge": challenge, "code_challenge_method": "S256",
              "login_hint": account.user}
    if account.provider == "gmail":
        params.update(access_type="offline", prompt="consent")
    url = ep.authorize + ("&" if "?" in ep.authorize else "?") + urlencode(params)
    thread = threading.Thread(target=catcher.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        say(f"Open this address in a browser and sign in as {account.user}:")
        say(url)
        if open_browser:
            import webbrowser
            try:
                webbrowser.open(url)
            except Exception:
                pass
        say("Waiting for the browser... On another machine, paste here the address the "
            "browser was sent to (it starts with " + redirect_uri + "), then Enter.")
        query = _wait_for_code(catcher, stdin, clock)
    finally:
        catcher.shutdown()
        catcher.server_close()
        thread.join(5)
    if query.get("state", [None])[0] != state:
        raise AuthError(f"account {account.name}: the pasted address is not the answer to "
                        "this sign-in", "start again and paste the whole address")
    if "code" not in query:
        error = query.get("error", ["no code"])[0][:60]
        raise AuthError(f"account {account.name}: the sign-in was not completed ({error})",
                        f"run `mailsync login {account.name}` again")
    code = query["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": account.oauth2_client_id, "code_verifier": verifier}
    if secret:
        form["client_secret"] = secret
    return _token_request(account, ep.token, form, clock, secret, code)


def _wait_for_code(catcher: _Catcher, stdin, clock: Clock) -> dict[str, list[str]]:
    deadline = time.monotonic() + LOGIN_TIMEOUT
    reading = stdin is not None and not stdin.closed
    while time.monotonic() < deadline:
        if catcher.got.wait(0 if reading else 0.2):
            return catcher.query or {}
        if not reading:
            continue
        try:
            ready, _, _ = select.select([stdin], [], [], 0.2)
        except (ValueError, OSError):
            reading = False
            continue
        if not ready:
            continue
        line = stdin.readline()
        if not line:
            reading = False      # end of input: only the browser can answer now
            continue
        line = line.strip()
        if not line:
            continue
        query = parse_qs(urlsplit(line).query if "?" in line else line.lstrip("?"))
        if "state" in query or "code" in query or "error" in query:
            return query
    raise TemporaryError("the sign-in was not completed in time",
                         "run `mailsync login` again")


def _device_flow(account: Account, ep: Endpoints, secret: str | None, say: Say,
                 clock: Clock) -> dict:
    label = f"account {account.name}"
    if not ep.device:
        raise ConfigError(f"{label}: no device authorization endpoint (Google, Yahoo and "
                          "Fastmail offer none for mail)", "sign in without --device (on "
                          "a machine without a browser: paste the address back), or set "
                          "oauth2_device_url")
    form = {"client_id": account.oauth2_client_id, "scope": " ".join(ep.scopes)}
    if secret:
        form["client_secret"] = secret
    status, data = post_form(account, ep.device, form)
    device_code = data.get("device_code")
    if status != 200 or not isinstance(device_code, str):
        raise AuthError(f"{label}: the provider refused the device sign-in: "
                        f"{_words(data, secret)}",
                        explain(_words(data)) or "check oauth2_client_id and the scopes")
    where = data.get("verification_uri") or data.get("verification_url") or "?"
    say(f"To sign in as {account.user}, open {where} and enter the code "
        f"{data.get('user_code', '?')}")
    interval = float(data.get("interval") or 5)
    deadline = time.monotonic() + min(float(data.get("expires_in") or 900), LOGIN_TIMEOUT)
    poll = {"grant_type": DEVICE_GRANT, "device_code": device_code,
            "client_id": account.oauth2_client_id}
    if secret:
        poll["client_secret"] = secret
    while time.monotonic() < deadline:
        time.sleep(interval)
        status, data = post_form(account, ep.token, poll)
        error = data.get("error")
        if status == 200 and data.get("access_token"):
            break
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        if error == "access_denied":
            raise AuthError(f"{label}: the sign-in was declined", "run `mailsync login "
                            f"--device {account.name}` again and approve it")
        if error == "expired_token":
            break
        raise AuthError(f"{label}: the device sign-in failed: "
                        f"{_words(data, secret, device_code)}",
                        explain(_words(data)) or "run `mailsync login` again")
    else:
        data = {}
    if not data.get("access_token"):
        raise AuthError(f"{label}: the code expired before the sign-in was completed",
                        f"run `mailsync login --device {account.name}` again")
    # The token answer came in the loop; turn it into a record like any other.
    lifetime = float(data.get("expires_in") or 3600)
    record = {"access_token": data["access_token"], "expires_at": clock() + lifetime,
              "lifetime": lifetime}
    if data.get("refresh_token"):
        record["refresh_token"] = data["refresh_token"]
    return record
