"""TOML config -> frozen, validated Account values; password resolution.

Every refusal names the file, the line where it can be found, the key and the fix,
and exits 78 through ConfigError.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailsync.errors import ConfigError
from mailsync.spans import is_count, is_span, parse_span
from mailsync.modes import MODES

PROTOCOLS = ("pop3", "imap")
TLS_MODES = ("implicit", "starttls", "none")
AUTH_METHODS = ("login", "plain", "xoauth2", "oauthbearer")
LAYOUTS = ("maildir++", "maildir++-utf8", "fs")
DELIVERIES = ("maildir", "mda", "lmtp")
PASSWORD_KEYS = ("password_command", "password_env", "password", "password_keyring")
OAUTH2_FLOWS = ("authorization_code", "client_credentials")
TOKEN_STORES = ("auto", "keyring", "file")


@dataclass(frozen=True)
class Account:
    name: str
    protocol: str
    host: str
    user: str
    port: int
    tls: str
    maildir: Path
    state_dir: Path
    allow_plaintext: bool = False
    ca_file: Path | None = None
    password_command: str | None = None
    password_env: str | None = None
    password: str | None = field(default=None, repr=False)
    auth: str = "login"
    oauth2_token_command: str | None = None
    password_keyring: bool = False
    provider: str | None = None
    oauth2_client_id: str | None = None
    oauth2_client_secret_command: str | None = None
    oauth2_tenant: str = "common"
    oauth2_authorize_url: str | None = None
    oauth2_token_url: str | None = None
    oauth2_device_url: str | None = None
    oauth2_scopes: tuple[str, ...] = ()
    oauth2_flow: str = "authorization_code"
    token_store: str = "auto"
    keep: bool = False
    keep_days: int = 0
    max_size: int = 0
    limit: int = 0
    timeout: float = 60.0
    mode: str = "sync"
    folders: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    layout: str = "maildir++"
    watch_folders: tuple[str, ...] = ()   # watch without NOTIFY; () = INBOX (+ All Mail on Gmail)
    watch_full_sync: float = 3600.0    # watch: seconds between full syncs (0: never)
    poll_interval: float = 300.0       # watch: seconds between POP3 polls
    log_file: Path | None = None       # one line per event appended here
    max_age: int = 0                   # IMAP: keep only the last N days locally (0: all)
    max_messages: int = 0              # IMAP: keep only the newest N per folder locally
    max_delete: float = 0.5
    connections: int = 2
    max_connections_per_host: int = 8   # all accounts of one run together, per host
    report_after: float = 0.0          # seconds; 0: report every failure
    pre_sync_command: str | None = None
    post_sync_command: str | None = None
    deliver: str = "maildir"
    mda_command: str | None = None
    lmtp_address: str | None = None
    lmtp_recipient: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    accounts: dict[str, Account]
    warnings: tuple[str, ...] = ()
    jobs: int | None = None           # the top-level `jobs` key; None: not set

    def select(self, names: tuple[str, ...] | list[str]) -> list[Account]:
        """The named accounts in the given order, or all of them when none is named."""
        if not names:
            return list(self.accounts.values())
        unknown = [n for n in names if n not in self.accounts]
        if unknown:
            known = ", ".join(self.accounts) or "none"
            raise ConfigError(f"{self.path}: no account named {unknown[0]!r}",
                              f"accounts in this file: {known}")
        return [self.accounts[n] for n in names]


def default_config_path() -> Path:
    if os.environ.get("MAILSYNC_CONFIG"):
        return Path(os.environ["MAILSYNC_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "mailsync" / "config.toml"


def default_state_dir(account: str) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or "~/.local/state"
    return Path(base).expanduser() / "mailsync" / account


# key -> (type check, description used in messages)
def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_duration(v: Any) -> bool:
    return (_is_int(v) and v >= 0) or (isinstance(v, str)
                                       and _DURATION_RE.fullmatch(v.strip()) is not None)


def _is_size(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, str) and _SIZE_RE.fullmatch(v.strip()) is not None)


KEYS: dict[str, tuple[Any, str]] = {
    "protocol": (_is_str, 'a string, "pop3" or "imap"'),
    "host": (_is_str, "a host name string"),
    "port": (_is_int, "a port number"),
    "tls": (_is_str, 'a string: "implicit", "starttls" or "none"'),
    "allow_plaintext": (_is_bool, "true or false"),
    "ca_file": (_is_str, "a path string"),
    "user": (_is_str, "a string"),
    "password_command": (_is_str, "a shell command string"),
    "password_env": (_is_str, "an environment variable name"),
    "password": (_is_str, "a string"),
    "auth": (_is_str, 'a string: "login", "plain", "xoauth2" or "oauthbearer"'),
    "oauth2_token_command": (_is_str, "a shell command string"),
    "password_keyring": (_is_bool, "true or false"),
    "provider": (_is_str, 'a string: "gmail", "microsoft", "yahoo" or "fastmail"'),
    "oauth2_client_id": (_is_str, "a string (the client ID of your app registration)"),
    "oauth2_client_secret_command": (_is_str, "a shell command string"),
    "oauth2_tenant": (_is_str, 'a string: "common", "organizations" or a tenant ID'),
    "oauth2_authorize_url": (_is_str, "an https:// URL"),
    "oauth2_token_url": (_is_str, "an https:// URL"),
    "oauth2_device_url": (_is_str, "an https:// URL"),
    "oauth2_scopes": (_is_str_list, 'a list of strings, e.g. ["https://mail.google.com/"]'),
    "oauth2_flow": (_is_str, 'a string: "authorization_code" or "client_credentials"'),
    "token_store": (_is_str, 'a string: "auto", "keyring" or "file"'),
    "maildir": (_is_str, "a path string"),
    "maildir_root": (_is_str, "a path string"),
    "state_dir": (_is_str, "a path string"),
    "keep": (_is_bool, "true or false"),
    "keep_days": (_is_int, "a whole number of days"),
    "max_size": (_is_size, 'a size such as 20M, 500K or a number of bytes'),
    "limit": (_is_int, "a whole number (0: no limit)"),
    "timeout": (_is_number, "a number of seconds"),
    "mode": (_is_str, 'a string: "sync", "pull", "push" or "backup"'),
    "folders": (_is_str_list, 'a list of strings, e.g. ["*"]'),
    "exclude": (_is_str_list, 'a list of strings, e.g. ["Junk"]'),
    "layout": (_is_str, 'a string: "maildir++", "maildir++-utf8" or "fs"'),
    "watch_folders": (_is_str_list, 'a list of folder names, e.g. ["INBOX", "Work"]'),
    "watch_full_sync": (is_span, 'a duration such as "1h", "30m" or seconds (0: never)'),
    "poll_interval": (is_span, 'a duration such as "5m" or seconds'),
    "log_file": (_is_str, "a path string"),
    "max_age": (is_count, "a whole number of days (0: no limit)"),
    "max_messages": (is_count, "a whole number of messages (0: no limit)"),
    "max_delete": (_is_number, "a number between 0 and 1"),
    "connections": (_is_int, "a whole number of connections (1 to 8)"),
    "max_connections_per_host": (_is_int, "a whole number of connections (1 or more)"),
    "report_after": (_is_duration, 'a duration such as "6h", "30m", "2d" or seconds'),
    "pre_sync_command": (_is_str, "a shell command string"),
    "post_sync_command": (_is_str, "a shell command string"),
    "deliver": (_is_str, 'a string: "maildir", "mda" or "lmtp"'),
    "mda_command": (_is_str, "a shell command string"),
    "lmtp_address": (_is_str, 'a string: "host:port" or a socket path'),
    "lmtp_recipient": (_is_str, "a user name or address string"),
}

_SIZE_RE = re.compile(r"(\d+)\s*([kKmMgG]?)[bB]?")
_DURATION_RE = re.compile(r"(\d+)\s*([smhdw]?)")


def parse_duration(value: int | str) -> float:
    """Seconds in a duration: 90, \"90s\", \"30m\", \"6h\", \"2d\", \"1w\"."""
    if isinstance(value, int):
        return float(value)
    m = _DURATION_RE.fullmatch(value.strip())
    assert m is not None  # checked by _is_duration
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return float(int(m.group(1)) * scale)


def parse_size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    m = _SIZE_RE.fullmatch(value.strip())
    assert m is not None  # checked by _is_size
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(m.group(1)) * scale


class _Source:
    """The config text, kept to point messages at the line of a key."""

    def __init__(self, path: Path, text: str, bare: str | None = None) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.bare = bare   # an account file's section whose keys stand at its top

    def where(self, section: str, key: str | None = None) -> str:
        header = re.compile(r"^\s*\[\s*" + re.escape(section).replace(r"\.", r"\s*\.\s*")
                            + r"\s*\]")
        start = next((i for i, ln in enumerate(self.lines) if header.match(ln)), None)
        if section == self.bare:
            start = -1
            if key is None:
                return str(self.path)
        if start is None:
            return str(self.path)
        if key is None:
            return f"{self.path}:{start + 1}"
        keyline = re.compile(r"^\s*\"?" + re.escape(key) + r"\"?\s*=")
        for i in range(start + 1, len(self.lines)):
            if re.match(r"^\s*\[", self.lines[i]):
                break
            if keyline.match(self.lines[i]):
                return f"{self.path}:{i + 1}"
        return f"{self.path}:{start + 1}" if start >= 0 else str(self.path)


# Keys of the config file itself, before any table: not account keys.
TOP_KEYS: dict[str, tuple[Any, str]] = {
    "include": (_is_str_list, 'a list of file globs, e.g. ["teams/*.toml"]'),
    "jobs": (_is_int, "a whole number of accounts worked on at once (1 or more)"),
}
ACCOUNTS_DIR = "accounts.d"
# [defaults] (and account) values in which "{account}" stands for the account's name.
TEMPLATE_KEYS = ("user", "maildir", "state_dir", "password_command")


def load_config(path: Path | None = None) -> Config:
    """The config file, plus the account files of accounts.d/ beside it and of its
    `include` globs: one set of accounts, every name once, [defaults] for all."""
    path = (path or default_config_path()).expanduser()
    data, src = _parse(path)
    unknown = [k for k in data if k not in ("defaults", "accounts", *TOP_KEYS)]
    if unknown:
        raise ConfigError(f"{src.where(unknown[0])}: unknown section [{unknown[0]}]"
                          if isinstance(data[unknown[0]], dict) else
                          f"{path}: unknown key {unknown[0]!r} at the top of the file",
                          "use [defaults], [accounts.NAME] and the top-level keys "
                          + ", ".join(TOP_KEYS))
    _check_top_keys(data, path)
    defaults = _table(data.get("defaults", {}), "defaults", src)
    _check_keys(defaults, "defaults", src)
    tables: dict[str, tuple[dict, str, _Source]] = {}   # name -> (raw, section, source)
    _add_accounts(tables, data, src)
    for extra in _account_files(path, data.get("include", [])):
        extra_data, extra_src = _parse(extra)
        _add_accounts(tables, extra_data, extra_src, bare_name=extra.stem)
    if not tables:
        raise ConfigError(f"{path}: no accounts configured",
                          "add an [accounts.NAME] table (see `mailsync init`), or one "
                          f"file per account in {path.parent / ACCOUNTS_DIR}/")
    accounts = {}
    warnings = _permission_warnings(path, data)
    for name, (raw, section, where) in tables.items():
        _check_keys(raw, section, where)
        merged = _substitute_name(name, {**defaults, **raw})
        accounts[name] = _build_account(name, merged, section, where)
        warnings += _protocol_warnings(accounts[name], raw, where)
        if where is not src:
            warnings += _permission_warnings(where.path, {"accounts": {name: raw}})
    return Config(path, accounts, tuple(dict.fromkeys(warnings)), data.get("jobs"))


def _parse(path: Path) -> tuple[dict, "_Source"]:
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}",
                          "fix the syntax at that line") from None
    return data, _Source(path, text)


def _check_top_keys(data: dict, path: Path) -> None:
    for key, (check, expected) in TOP_KEYS.items():
        if key in data and not check(data[key]):
            raise ConfigError(f"{path}: {key} must be {expected}, not {data[key]!r}",
                              f"fix the value of {key}")
    if "jobs" in data and data["jobs"] < 1:
        raise ConfigError(f"{path}: jobs = {data['jobs']} must be 1 or more",
                          "fix the value of jobs")


def _account_files(path: Path, include: list[str]) -> list[Path]:
    """accounts.d/*.toml beside the config, then each include glob's files (relative
    to the config's folder), each file once, in name order within each."""
    base = path.parent
    found: list[Path] = sorted((base / ACCOUNTS_DIR).glob("*.toml"))
    for pattern in include:
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else base / full
        matched = sorted(Path(full.anchor).glob(str(full.relative_to(full.anchor))))
        if not matched and not any(c in pattern for c in "*?["):
            raise ConfigError(f"{path}: include names {full}, which does not exist",
                              "fix the path in include, or remove it")
        found += matched
    seen = {path.resolve()}
    unique: list[Path] = []
    for f in found:
        real = f.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(f)
    return unique


def _add_accounts(tables: dict, data: dict, src: "_Source",
                  bare_name: str | None = None) -> None:
    """The accounts of one file: its [accounts.NAME] tables or, in an account file
    holding none, the file's own keys as the account named by the file (alice.toml:
    alice). A name given twice is refused, naming both places."""
    if bare_name is not None:
        stray = [k for k in data if k in ("defaults", *TOP_KEYS)]
        if stray:
            raise ConfigError(f"{src.where(stray[0]) if isinstance(data[stray[0]], dict) else src.path}: "
                              f"{stray[0]} belongs in the main config, not an account file",
                              "move it to the config file")
    if bare_name is not None and "accounts" not in data:
        found = {bare_name: (data, None)}
    else:
        unknown = [k for k in data if k != "accounts"] if bare_name is not None else []
        if unknown:
            raise ConfigError(f"{src.path}: an account file holds either [accounts.NAME] "
                              f"tables or one account's keys, not both ({unknown[0]!r})",
                              f"put {unknown[0]} inside an [accounts.NAME] table")
        found = {n: (raw, f"accounts.{n}") for n, raw in
                 _table(data.get("accounts", {}), "accounts", src).items()}
    for name, (raw, section) in found.items():
        where = src if section is not None else _Source(
            src.path, "\n".join(src.lines), bare=f"accounts.{name}")
        section = section or f"accounts.{name}"
        raw = _table(raw, section, where)
        if name in tables:
            first = tables[name][2].where(tables[name][1])
            raise ConfigError(f"{where.where(section)}: account {name!r} is defined twice "
                              f"(also at {first})", "keep one of them")
        tables[name] = (raw, section, where)


def _substitute_name(name: str, raw: dict) -> dict:
    """{account} in user, maildir, state_dir and password_command (from [defaults] or
    the account's own table) is the account's name: one [defaults] serves hundreds of
    accounts. Names hold no shell syntax (see _build_account), so a command stays safe."""
    return {k: v.replace("{account}", name) if k in TEMPLATE_KEYS and isinstance(v, str)
            else v for k, v in raw.items()}


POP3_ONLY = ("keep", "keep_days", "limit")
IMAP_ONLY = ("mode", "folders", "exclude", "layout", "max_delete", "connections")


def _protocol_warnings(account: Account, raw: dict, src: "_Source") -> list[str]:
    """A key set in an account's own table that its protocol ignores (in [defaults] it
    may be meant for the other accounts)."""
    other = IMAP_ONLY if account.protocol == "pop3" else POP3_ONLY
    return [f"{src.where(f'accounts.{account.name}', key)}: {key} applies to "
            f"{'IMAP' if account.protocol == 'pop3' else 'POP3'} accounts only; "
            f"account {account.name} is {account.protocol.upper()} and ignores it"
            for key in other if key in raw]


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found",
                          "write one with `mailsync init` or pass -c PATH") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}",
                          "check the file's permissions and encoding (UTF-8)") from None


def _table(value: Any, section: str, src: _Source) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{src.where(section)}: [{section}] must be a table",
                          f"write it as [{section}] followed by key = value lines")
    return value


def _close_keys(key: str) -> list[str]:
    """Known keys the unknown one is probably a typo of: a close spelling (hots, hostname,
    pasword, max_delet), else one it starts like (password_cmd)."""
    import difflib
    close = difflib.get_close_matches(key.lower(), KEYS, n=1, cutoff=0.6)
    return close or [k for k in KEYS if len(key) >= 4 and k.startswith(key[:4])]


def _check_keys(raw: dict, section: str, src: _Source) -> None:
    for key, value in raw.items():
        if key not in KEYS:
            close = _close_keys(key)
            hint = f"did you mean {close[0]!r}?" if close else "remove it (see `man mailsync`)"
            raise ConfigError(f"{src.where(section, key)}: unknown key {key!r} in [{section}]",
                              hint)
        check, expected = KEYS[key]
        if not check(value):
            raise ConfigError(f"{src.where(section, key)}: {key} must be {expected}, "
                              f"not {value!r}" if key != "password" else
                              f"{src.where(section, key)}: password must be a string",
                              f"fix the value of {key}")


def _choice(raw: dict, key: str, choices: tuple, default: str, section: str,
            src: _Source) -> str:
    value = raw.get(key, default)
    if value not in choices:
        raise ConfigError(f"{src.where(section, key)}: {key} = {value!r} is not one of "
                          f"{', '.join(choices)}", f"set {key} to one of those")
    return value


def _build_account(name: str, raw: dict, section: str, src: _Source) -> Account:
    if not re.fullmatch(r"[A-Za-z0-9_.@+-]+", name) or name.startswith("."):
        raise ConfigError(f"{src.where(section)}: account name {name!r} is not usable",
                          "use letters, digits, '.', '_', '-', '@' or '+'")
    if "provider" in raw:
        from mailsync.providers import PROVIDERS, preset_defaults
        if raw["provider"] not in PROVIDERS:
            raise ConfigError(f"{src.where(section, 'provider')}: provider = "
                              f"{raw['provider']!r} is not one of {', '.join(PROVIDERS)}",
                              "use one of those, or leave provider out and set host and "
                              "the oauth2_*_url keys")
        raw = {**raw, **preset_defaults(raw["provider"], raw)}
    elif "oauth2_client_id" in raw and "auth" not in raw:
        raw = {**raw, "auth": "xoauth2"}
    for key in ("protocol", "host", "user"):
        if key not in raw:
            raise ConfigError(f"{src.where(section)}: [{section}] is missing {key!r}",
                              f"add {key} = \"...\" to [{section}]")
    protocol = _choice(raw, "protocol", PROTOCOLS, "", section, src)
    tls = _choice(raw, "tls", TLS_MODES, "implicit", section, src)
    if tls == "none" and not raw.get("allow_plaintext", False):
        raise ConfigError(f"{src.where(section, 'tls')}: tls = \"none\" sends the password "
                          "in clear text", "use tls = \"starttls\" or set allow_plaintext = true")
    auth = _choice(raw, "auth", AUTH_METHODS, "login", section, src)
    _check_secret_source(raw, auth, section, src)
    port = raw.get("port") or _default_port(protocol, tls)
    if not 0 < port < 65536:
        raise ConfigError(f"{src.where(section, 'port')}: port {port} is out of range",
                          "use a port between 1 and 65535")
    _check_ranges(raw, section, src)
    root = Path(raw.get("maildir_root", "~/Mail")).expanduser()
    maildir = Path(raw["maildir"]).expanduser() if "maildir" in raw else root / name
    state_dir = (Path(raw["state_dir"]).expanduser() if "state_dir" in raw
                 else default_state_dir(name))
    deliver = _choice(raw, "deliver", DELIVERIES, "maildir", section, src)
    _check_delivery(raw, protocol, deliver, section, src)
    _check_local_paths(raw, maildir if deliver == "maildir" else None, section, src)
    return Account(
        name=name, protocol=protocol, host=raw["host"], user=raw["user"], port=port,
        tls=tls, maildir=maildir, state_dir=state_dir,
        allow_plaintext=raw.get("allow_plaintext", False),
        ca_file=Path(raw["ca_file"]).expanduser() if "ca_file" in raw else None,
        password_command=raw.get("password_command"), password_env=raw.get("password_env"),
        password=raw.get("password"), auth=auth,
        oauth2_token_command=raw.get("oauth2_token_command"),
        password_keyring=raw.get("password_keyring", False), provider=raw.get("provider"),
        oauth2_client_id=raw.get("oauth2_client_id"),
        oauth2_client_secret_command=raw.get("oauth2_client_secret_command"),
        oauth2_tenant=raw.get("oauth2_tenant", "common"),
        oauth2_authorize_url=raw.get("oauth2_authorize_url"),
        oauth2_token_url=raw.get("oauth2_token_url"),
        oauth2_device_url=raw.get("oauth2_device_url"),
        oauth2_scopes=tuple(raw.get("oauth2_scopes", ())),
        oauth2_flow=_choice(raw, "oauth2_flow", OAUTH2_FLOWS, "authorization_code", section,
                            src),
        token_store=_choice(raw, "token_store", TOKEN_STORES, "auto", section, src),
        keep=raw.get("keep", False), keep_days=raw.get("keep_days", 0),
        max_size=parse_size(raw.get("max_size", 0)), limit=raw.get("limit", 0),
        timeout=float(raw.get("timeout", 60)),
        mode=_choice(raw, "mode", MODES, "sync", section, src),
        folders=tuple(raw.get("folders", ["*"])), exclude=tuple(raw.get("exclude", [])),
        layout=_choice(raw, "layout", LAYOUTS, "maildir++", section, src),
        watch_folders=tuple(raw.get("watch_folders", ())),
        watch_full_sync=parse_span(raw.get("watch_full_sync", "1h")),
        poll_interval=max(parse_span(raw.get("poll_interval", "5m")), 1.0),
        log_file=Path(raw["log_file"]).expanduser() if "log_file" in raw else None,
        max_age=raw.get("max_age", 0), max_messages=raw.get("max_messages", 0),
        max_delete=float(raw.get("max_delete", 0.5)), connections=raw.get("connections", 2),
        max_connections_per_host=raw.get("max_connections_per_host", 8),
        report_after=parse_duration(raw.get("report_after", 0)),
        pre_sync_command=raw.get("pre_sync_command"),
        post_sync_command=raw.get("post_sync_command"), deliver=deliver,
        mda_command=raw.get("mda_command"), lmtp_address=raw.get("lmtp_address"),
        lmtp_recipient=raw.get("lmtp_recipient"),
    )


def _default_port(protocol: str, tls: str) -> int:
    if protocol == "pop3":
        return 995 if tls == "implicit" else 110
    return 993 if tls == "implicit" else 143


def _check_secret_source(raw: dict, auth: str, section: str, src: _Source) -> None:
    given = [k for k in PASSWORD_KEYS if k in raw and raw[k] is not False]
    if auth in ("xoauth2", "oauthbearer"):
        if "oauth2_token_command" in raw and "oauth2_client_id" in raw:
            raise ConfigError(f"{src.where(section, 'oauth2_client_id')}: [{section}] sets "
                              "both oauth2_token_command and oauth2_client_id",
                              "keep oauth2_client_id for the built-in sign-in "
                              "(`mailsync login`), or the command")
        if "oauth2_token_command" not in raw and "oauth2_client_id" not in raw:
            raise ConfigError(f"{src.where(section, 'auth')}: auth = {auth!r} needs "
                              "oauth2_client_id or oauth2_token_command",
                              "add the client ID of your app registration (then run "
                              "`mailsync login`), or a command that prints a token")
        if "oauth2_client_id" in raw:
            from mailsync.oauth import check_oauth_config
            check_oauth_config(raw, section, src.where)
        return
    if not given:
        raise ConfigError(f"{src.where(section)}: [{section}] has no password source",
                          "add password_command, password_env, password or "
                          "password_keyring = true")
    if len(given) > 1:
        raise ConfigError(f"{src.where(section, given[1])}: [{section}] sets both "
                          f"{given[0]} and {given[1]}", "keep only one password source")


def _check_ranges(raw: dict, section: str, src: _Source) -> None:
    rules = {
        "keep_days": (lambda v: v >= 0, "0 or more"),
        "limit": (lambda v: v >= 0, "0 or more"),
        "timeout": (lambda v: v > 0, "more than 0 seconds"),
        "max_delete": (lambda v: 0 <= v <= 1, "between 0 and 1"),
        "connections": (lambda v: 1 <= v <= 8, "between 1 and 8"),
        "max_connections_per_host": (lambda v: v >= 1, "1 or more"),
    }
    for key, (ok, expected) in rules.items():
        if key in raw and not ok(raw[key]):
            raise ConfigError(f"{src.where(section, key)}: {key} = {raw[key]!r} must be "
                              f"{expected}", f"fix the value of {key}")
    if raw.get("keep_days") and not raw.get("keep"):
        raise ConfigError(f"{src.where(section, 'keep_days')}: keep_days only applies with "
                          "keep = true", "set keep = true or remove keep_days")


def _check_delivery(raw: dict, protocol: str, deliver: str, section: str,
                    src: _Source) -> None:
    """deliver and its keys: each needs the other, and POP3 (IMAP syncs a Maildir)."""
    if deliver != "maildir" and protocol != "pop3":
        raise ConfigError(f"{src.where(section, 'deliver')}: deliver = {deliver!r} applies to "
                          "POP3 accounts only", "an IMAP account syncs its Maildir; remove "
                          "deliver from this account")
    for key, mode in (("mda_command", "mda"), ("lmtp_address", "lmtp"),
                      ("lmtp_recipient", "lmtp")):
        if key in raw and deliver != mode:
            raise ConfigError(f"{src.where(section, key)}: {key} only applies with "
                              f"deliver = \"{mode}\"", f"set deliver = \"{mode}\" or remove {key}")
    needed = {"mda": "mda_command", "lmtp": "lmtp_address"}.get(deliver)
    if needed and not str(raw.get(needed, "")).strip():
        raise ConfigError(f"{src.where(section, 'deliver')}: deliver = {deliver!r} needs "
                          f"{needed}", "add it, e.g. mda_command = \"/usr/lib/dovecot/"
                          "dovecot-lda -d $USER\"" if deliver == "mda" else
                          "add it: lmtp_address = \"host:port\" or a socket path")
    address = raw.get("lmtp_address")
    if address is not None and not address.startswith("/"):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{src.where(section, 'lmtp_address')}: lmtp_address = "
                              f"{address!r} is neither host:port nor a socket path",
                              "write \"127.0.0.1:24\" or \"/var/run/dovecot/lmtp\"")


def _check_local_paths(raw: dict, maildir: Path | None, section: str, src: _Source) -> None:
    """What can be known before connecting: ca_file is a readable file, the Maildir is (or
    can become) a folder, a password in the file is not empty."""
    if "ca_file" in raw:
        ca = Path(raw["ca_file"]).expanduser()
        if not ca.is_file() or not os.access(ca, os.R_OK):
            why = "does not exist" if not ca.exists() else \
                "is not a file" if not ca.is_file() else "cannot be read"
            raise ConfigError(f"{src.where(section, 'ca_file')}: ca_file {ca} {why}",
                              "point ca_file at the PEM file of the CA that signed the "
                              "server's certificate")
    if maildir is not None:
        key = "maildir" if "maildir" in raw else "maildir_root"
        probe = maildir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            what = "is a file, not a folder" if probe == maildir else \
                f"cannot be created: {probe} is a file, not a folder"
            raise ConfigError(f"{src.where(section, key)}: maildir {maildir} {what}",
                              f"point {key} at a folder (mailsync creates it if missing)")
    for key in ("mda_command", "pre_sync_command", "post_sync_command"):
        program = _named_program(raw.get(key))
        if program is not None and not os.access(program, os.X_OK):
            why = "is not executable" if os.path.exists(program) else "does not exist"
            raise ConfigError(f"{src.where(section, key)}: {key} runs {program}, which {why}",
                              f"fix the path in {key}")
    if raw.get("password") == "":
        raise ConfigError(f"{src.where(section, 'password')}: password is empty",
                          "set the password, or use password_command or password_env")
    env = raw.get("password_env")
    if env and os.environ.get(env) == "":   # unset is found when a command needs it
        raise ConfigError(f"{src.where(section, 'password_env')}: password_env names "
                          f"${env}, which is empty", "export the password in it, or unset "
                          "it and use another password source")


def _named_program(command: str | None) -> str | None:
    """The absolute path a shell command starts with, if it plainly does (no variable,
    no redirection first): a program that can be checked before anything runs."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return None
    if not words or not words[0].startswith("/") or any(c in words[0] for c in "$`*?"):
        return None
    return words[0]


def _permission_warnings(path: Path, data: dict) -> list[str]:
    tables = [data.get("defaults", {})] + list(data.get("accounts", {}).values())
    if not any(isinstance(t, dict) and "password" in t for t in tables):
        return []
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [f"{path} holds a password and others can read it; run: chmod 600 {path}"]
    return []


def resolve_secret(account: Account) -> str:
    """The password (or OAuth token) for the account, from its configured source."""
    if account.auth in ("xoauth2", "oauthbearer"):
        if account.oauth2_client_id is not None:
            from mailsync.oauth import access_token
            return access_token(account)
        return _run_secret_command(account, "oauth2_token_command", account.oauth2_token_command)
    if account.password_keyring:
        from mailsync.secrets_store import keyring_password
        return keyring_password(account)
    if account.password is not None:
        return account.password
    if account.password_env is not None:
        value = os.environ.get(account.password_env)
        if value is None:
            raise ConfigError(f"account {account.name}: password_env names "
                              f"${account.password_env}, which is not set",
                              "export it before running mailsync")
        if not value:
            raise ConfigError(f"account {account.name}: password_env names "
                              f"${account.password_env}, which is empty",
                              "export the password in it before running mailsync")
        return value
    return _run_secret_command(account, "password_command", account.password_command)


def _run_secret_command(account: Account, key: str, command: str | None) -> str:
    try:
        done = subprocess.run(command or "", shell=True, capture_output=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"account {account.name}: {key} could not run: "
                          f"{type(exc).__name__}", f"check {key} in the config") from None
    if done.returncode != 0:
        # The command's own first line of complaint: its error, never the secret (which
        # goes to stdout, and only on success).
        said = next((ln.strip() for ln in done.stderr.decode("utf-8", "replace").splitlines()
                     if ln.strip()), "")
        raise ConfigError(f"account {account.name}: {key} failed with exit status "
                          f"{done.returncode}" + (f": {said[:300]}" if said else ""),
                          f"run it by hand to see why: {command}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"account {account.name}: {key} printed nothing",
                          "it must print the secret on its first line")
    return lines[0]
