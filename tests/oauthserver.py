"""A small OAuth2 authorization server on loopback, for tests (no pytest import).

Endpoints (all under ``base_url``):

* ``GET /authorize`` -- the "browser" step: approves at once (as ``login_hint``, or
  ``default_user``) and redirects to ``redirect_uri?code=...&state=...``; checks that
  PKCE S256 is used and the redirect URI is loopback http. ``deny_next`` makes the next
  one answer ``error=access_denied``.
* ``POST /token`` -- ``authorization_code`` (PKCE verified), ``refresh_token``,
  ``client_credentials`` and the device-code grant. Access tokens live
  ``access_lifetime`` seconds (on the server's clock, which ``advance()`` moves on);
  refresh tokens live until ``revoke()``.
* ``POST /device`` and ``GET /device/approve?user_code=...&user=...`` -- the device flow.
* ``POST /introspect`` -- RFC 7662, for Dovecot's oauth2 passdb: ``{"active": true,
  "username": ...}`` for a live access token, ``{"active": false}`` otherwise.

Every request is recorded in ``requests`` (method, path, form) so tests can count
refreshes and sign-ins. Runs in a thread: ``start()`` / ``stop()`` or ``with``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class Client:
    client_id: str
    secret: str | None = None       # confidential clients
    app_user: str | None = None     # whose mailbox a client-credentials token opens


@dataclass
class Grant:
    user: str
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class Pending:
    user: str | None
    client_id: str
    scope: str
    challenge: str | None = None
    redirect_uri: str | None = None
    expires: float = 0.0
    approved: bool = False
    denied: bool = False


@dataclass
class Issued:
    user: str
    client_id: str
    expires: float
    grant: str | None = None        # the refresh token it came from


class OAuthServer:
    def __init__(self, access_lifetime: float = 3600, rotate_refresh: bool = False,
                 device_interval: float = 0.2) -> None:
        self.access_lifetime = access_lifetime
        self.rotate_refresh = rotate_refresh
        self.device_interval = device_interval
        self.default_user = "someone"
        self.clients: dict[str, Client] = {}
        self.grants: dict[str, Grant] = {}          # refresh token -> grant
        self.tokens: dict[str, Issued] = {}         # access token -> issued
        self.codes: dict[str, Pending] = {}
        self.devices: dict[str, Pending] = {}       # device code -> pending
        self.user_codes: dict[str, str] = {}        # user code -> device code
        self.requests: list[tuple[str, str, dict]] = []
        self.ever: list[str] = []                   # every token ever issued
        self.deny_next = False
        # What a refused refresh says (Microsoft's words by default; Google says
        # "Token has been expired or revoked.").
        self.refresh_refusal = "AADSTS70000: The refresh token was revoked"
        self.offset = 0.0
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- clock, clients, revocation -------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.offset += seconds

    def add_client(self, client_id: str, secret: str | None = None,
                   app_user: str | None = None) -> Client:
        client = Client(client_id, secret, app_user)
        with self.lock:
            self.clients[client_id] = client
        return client

    def revoke(self, user: str | None = None) -> int:
        """Revoke every refresh token (of user, when given) and the access tokens they
        gave. Returns how many refresh tokens were revoked."""
        n = 0
        with self.lock:
            for rt, grant in self.grants.items():
                if user is None or grant.user == user:
                    if not grant.revoked:
                        n += 1
                    grant.revoked = True
            for token, issued in list(self.tokens.items()):
                if issued.grant in self.grants and self.grants[issued.grant].revoked:
                    del self.tokens[token]
        return n

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def count(self, path: str, **form) -> int:
        with self.lock:
            return sum(1 for _m, p, f in self.requests if p == path
                       and all(f.get(k) == v for k, v in form.items()))

    def all_secrets(self) -> list[str]:
        """Every token, refresh token and code this server ever issued."""
        with self.lock:
            return [*self.ever, *self.grants,
                    *[k.removeprefix("used-") for k in [*self.codes, *self.devices]],
                    *[c.secret for c in self.clients.values() if c.secret]]

    # -- URLs --------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def device_url(self) -> str:
        return self.base_url + "/device"

    @property
    def introspect_url(self) -> str:
        return self.base_url + "/introspect"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "OAuthServer":
        server = self

        class Handler(_Handler):
            oauth = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = None

    def __enter__(self) -> "OAuthServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- token issuing -----------------------------------------------------------------------
    def _issue(self, user: str, client_id: str, scope: str, grant: str | None,
               with_refresh: bool) -> dict:
        token = "at-" + secrets.token_urlsafe(24)
        self.tokens[token] = Issued(user, client_id, self.now() + self.access_lifetime, grant)
        self.ever.append(token)
        answer = {"access_token": token, "token_type": "Bearer",
                  "expires_in": int(self.access_lifetime), "scope": scope}
        if with_refresh:
            rt = grant
            if rt is None or self.rotate_refresh:
                rt = "rt-" + secrets.token_urlsafe(32)
                self.grants[rt] = Grant(user, client_id, scope)
                self.tokens[token].grant = rt
                if grant is not None:
                    self.grants[grant].revoked = True
            answer["refresh_token"] = rt
        return answer

    def introspect(self, token: str) -> dict:
        with self.lock:
            issued = self.tokens.get(token)
            if issued is None or issued.expires <= self.now():
                return {"active": False}
            if issued.grant is not None and self.grants[issued.grant].revoked:
                return {"active": False}
            return {"active": True, "username": issued.user, "client_id": issued.client_id,
                    "exp": int(issued.expires), "token_type": "Bearer"}


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _loopback_http(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


class _Handler(BaseHTTPRequestHandler):
    oauth: OAuthServer

    def log_message(self, *args) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------
    def _json(self, status: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error: str, status: int = 400, description: str = "") -> None:
        data = {"error": error}
        if description:
            data["error_description"] = description
        self._json(status, data)

    def _form(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            form.setdefault("client_id", cid)
            form.setdefault("client_secret", secret)
        return form

    def _record(self, form: dict) -> None:
        with self.oauth.lock:
            self.oauth.requests.append((self.command, urlsplit(self.path).path, form))

    # -- GET --------------------------------------------------------------------------------
    def do_GET(self) -> None:   # noqa: N802
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self._record(query)
        if parts.path == "/authorize":
            self._authorize(query)
        elif parts.path == "/device/approve":
            self._approve_device(query)
        else:
            self._error("not_found", 404)

    def _authorize(self, q: dict) -> None:
        srv = self.oauth
        redirect = q.get("redirect_uri", "")
        if not _loopback_http(redirect):
            self._error("invalid_request", 400, "redirect_uri must be loopback http")
            return
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" \
                or not q.get("code_challenge") or not q.get("state"):
            self._error("invalid_request", 400, "PKCE S256 and state are required")
            return
        sep = "&" if "?" in redirect else "?"
        with srv.lock:
            if srv.deny_next:
                srv.deny_next = False
                target = redirect + sep + urlencode({"error": "access_denied",
                                                     "state": q["state"]})
            else:
                code = "code-" + secrets.token_urlsafe(24)
                srv.codes[code] = Pending(q.get("login_hint") or srv.default_user,
                                          q.get("client_id", ""), q.get("scope", ""),
                                          q["code_challenge"], redirect, srv.now() + 600)
                target = redirect + sep + urlencode({"code": code, "state": q["state"]})
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _approve_device(self, q: dict) -> None:
        srv = self.oauth
        with srv.lock:
            device = srv.user_codes.get(q.get("user_code", ""))
            if device is None:
                self._error("invalid_request", 404, "unknown user code")
                return
            pending = srv.devices[device]
            if q.get("deny"):
                pending.denied = True
            else:
                pending.approved = True
                pending.user = q.get("user") or srv.default_user
        self._json(200, {"approved": pending.approved})

    # -- POST -------------------------------------------------------------------------------
    def do_POST(self) -> None:   # noqa: N802
        path = urlsplit(self.path).path
        form = self._form()
        self._record(form)
        if path == "/token":
            self._token(form)
        elif path == "/device":
            self._device(form)
        elif path == "/introspect":
            self._json(200, self.oauth.introspect(form.get("token", "")))
        else:
            self._error("not_found", 404)

    def _client_ok(self, form: dict, require_secret: bool = False) -> bool:
        client = self.oauth.clients.get(form.get("client_id", ""))
        if client is None:
            self._error("invalid_client", 401, "unknown client")
            return False
        if (client.secret is not None or require_secret) \
                and form.get("client_secret") != client.secret:
            self._error("invalid_client", 401, "AADSTS7000215: Invalid client secret")
            return False
        return True

    def _device(self, form: dict) -> None:
        srv = self.oauth
        if not self._client_ok(form):
            return
        with srv.lock:
            device = "dc-" + secrets.token_urlsafe(24)
            user_code = secrets.token_hex(4).upper()
            srv.devices[device] = Pending(None, form["client_id"], form.get("scope", ""),
                                          expires=srv.now() + 300)
            srv.user_codes[user_code] = device
        self._json(200, {"device_code": device, "user_code": user_code,
                         "verification_uri": self.oauth.base_url + "/device/approve",
                         "expires_in": 300, "interval": srv.device_interval})

    def _token(self, form: dict) -> None:
        srv = self.oauth
        grant_type = form.get("grant_type")
        if not self._client_ok(form, require_secret=grant_type == "client_credentials"):
            return
        cid = form["client_id"]
        with srv.lock:
            if grant_type == "authorization_code":
                pending = srv.codes.pop(form.get("code", ""), None)
                if pending is None or pending.expires < srv.now() or pending.client_id != cid:
                    self._error("invalid_grant", description="unknown or used code")
                    return
                if pending.redirect_uri != form.get("redirect_uri"):
                    self._error("invalid_grant", description="redirect_uri mismatch")
                    return
                if _s256(form.get("code_verifier", "")) != pending.challenge:
                    self._error("invalid_grant", description="PKCE verification failed")
                    return
                srv.codes["used-" + form["code"]] = pending   # remembered for leak checks
                self._json(200, srv._issue(pending.user, cid, pending.scope, None, True))
            elif grant_type == "refresh_token":
                rt = form.get("refresh_token", "")
                grant = srv.grants.get(rt)
                if grant is None or grant.revoked or grant.client_id != cid:
                    self._error("invalid_grant", description=srv.refresh_refusal)
                    return
                self._json(200, srv._issue(grant.user, cid, grant.scope, rt, True))
            elif grant_type == DEVICE_GRANT:
                pending = srv.devices.get(form.get("device_code", ""))
                if pending is None or pending.client_id != cid:
                    self._error("invalid_grant")
                elif pending.denied:
                    self._error("access_denied")
                elif pending.expires < srv.now():
                    self._error("expired_token")
                elif not pending.approved:
                    self._error("authorization_pending")
                else:
                    del srv.devices[form["device_code"]]
                    srv.devices["used-" + form["device_code"]] = pending
                    self._json(200, srv._issue(pending.user or srv.default_user, cid,
                                               pending.scope, None, True))
            elif grant_type == "client_credentials":
                client = srv.clients[cid]
                self._json(200, srv._issue(client.app_user or srv.default_user, cid,
                                           form.get("scope", ""), None, False))
            else:
                self._error("unsupported_grant_type")
