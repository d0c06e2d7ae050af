"""Provider presets: `provider = "gmail"` and friends fill in what every user of that
provider would type anyway (host, port, TLS, SASL mechanism, OAuth2 endpoints, scopes).

A preset only supplies defaults: any key set in the config wins. Endpoints of any other
provider come from oauth2_authorize_url, oauth2_token_url and oauth2_device_url.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Preset:
    imap_host: str
    pop3_host: str
    authorize_url: str
    token_url: str
    device_url: str | None
    scopes: tuple[str, ...]
    app_scopes: tuple[str, ...] = ()        # client credentials (organisation accounts)
    redirect_host: str = "127.0.0.1"        # what the loopback redirect URI names
    auth: str = "xoauth2"


_MS = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"

PRESETS: dict[str, Preset] = {
    "gmail": Preset(
        imap_host="imap.gmail.com", pop3_host="pop.gmail.com",
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",
        device_url=None,     # Google's device flow does not allow the mail scope
        scopes=("https://mail.google.com/",)),
    "microsoft": Preset(
        imap_host="outlook.office365.com", pop3_host="outlook.office365.com",
        authorize_url=_MS + "/authorize", token_url=_MS + "/token",
        device_url=_MS + "/devicecode",
        # offline_access: without it Microsoft issues no refresh token (one hour, then
        # a new sign-in).
        scopes=("https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office.com/POP.AccessAsUser.All", "offline_access"),
        app_scopes=("https://outlook.office365.com/.default",),
        redirect_host="localhost"),     # Entra ID registers http://localhost, any port
    "yahoo": Preset(
        imap_host="imap.mail.yahoo.com", pop3_host="pop.mail.yahoo.com",
        authorize_url="https://api.login.yahoo.com/oauth2/request_auth",
        token_url="https://api.login.yahoo.com/oauth2/get_token",
        device_url=None, scopes=("mail-w",)),
    "fastmail": Preset(
        imap_host="imap.fastmail.com", pop3_host="pop.fastmail.com",
        authorize_url="https://api.fastmail.com/oauth/authorize",
        token_url="https://api.fastmail.com/oauth/refresh",
        device_url=None,
        scopes=("https://www.fastmail.com/dev/protocol-imap",
                "https://www.fastmail.com/dev/protocol-pop")),
}

PROVIDERS = tuple(PRESETS)


def preset_defaults(provider: str, raw: dict) -> dict:
    """The keys the preset fills in for this account (only those the config leaves out)."""
    preset = PRESETS[provider]
    protocol = raw.get("protocol", "imap")
    filled = {"protocol": protocol,
              "host": preset.pop3_host if protocol == "pop3" else preset.imap_host,
              "tls": "implicit"}
    if "oauth2_client_id" in raw or "oauth2_token_command" in raw:
        filled["auth"] = preset.auth
    return {k: v for k, v in filled.items() if k not in raw}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_problem(url: str) -> str | None:
    """Why url cannot be an OAuth2 endpoint (https, or http on a loopback address only),
    or None when it can."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "is not a URL"
    if not host:
        return "is not a URL"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and is_loopback(host):
        return None
    return "must be an https:// address (http:// only on a loopback address)"
