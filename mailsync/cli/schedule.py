"""`mailsync schedule`: systemd user units that run mailsync for one account.

One-shot runs: a service (Type=oneshot, `mailsync -q run ACCOUNT`) and a timer
(OnBootSec= and OnUnitActiveSec= the interval). Watch: one service (Type=notify,
`mailsync watch ACCOUNT`, restarted on failure, with a watchdog and ExecReload
sending SIGHUP). Units are written under $XDG_CONFIG_HOME/systemd/user/ (default
~/.config/systemd/user/) by --install; nothing else is touched: the user enables them.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from mailsync.errors import UsageError
from mailsync.spans import parse_span

WATCHDOG_SEC = 120     # watch sends WATCHDOG=1 every half of it


@dataclass(frozen=True)
class Unit:
    name: str
    text: str


def unit_base(account: str) -> str:
    """A unit-name-safe spelling of the account: '@' would make a template instance."""
    return "mailsync-" + re.sub(r"[^A-Za-z0-9_.-]", "_", account)


def mailsync_command() -> list[str]:
    """How systemd should start this mailsync: the installed script when that is what
    runs now, else this Python with -m mailsync."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "mailsync" and argv0.is_file():
        return [str(argv0.resolve())]
    return [sys.executable, "-m", "mailsync"]


def _quote(word: str) -> str:
    """One ExecStart= word: quoted when it holds anything systemd would split or expand."""
    if word and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word.replace("%", "%%")
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") \
        .replace("$", "$$")
    return f'"{escaped}"'


def _exec(words: list[str]) -> str:
    return " ".join(_quote(w) for w in words)


def _environment() -> str:
    """PYTHONPATH when mailsync runs from a source tree (not installed)."""
    path = os.environ.get("PYTHONPATH")
    return f"Environment={_quote('PYTHONPATH=' + path)}\n" if path else ""


def units(account: str, every: str | None, watch: bool, config: Path | None) -> list[Unit]:
    base = unit_base(account)
    config_args = ["-c", str(config.expanduser().resolve())] if config else []
    command = mailsync_command() + config_args
    if watch:
        text = f"""\
[Unit]
Description=mailsync watch: keep account {account} in step
Documentation=man:mailsync(1)
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={_exec(command + ["watch", account])}
ExecReload=/bin/kill -HUP $MAINPID
{_environment()}Restart=on-failure
RestartSec=30
WatchdogSec={WATCHDOG_SEC}
# SIGTERM ends it after the message in flight, with exit 0
TimeoutStopSec=90

[Install]
WantedBy=default.target
"""
        return [Unit(f"{base}-watch.service", text)]
    if every is None:
        raise UsageError("schedule needs --every (or --watch)",
                         "e.g. mailsync schedule ACCOUNT --every 15m")
    try:
        seconds = int(parse_span(every))
    except ValueError as exc:
        raise UsageError(f"--every {every!r}: {exc}", "use e.g. 15m, 1h or 900") from None
    if seconds < 60:
        raise UsageError(f"--every {every}: under a minute", "use 1m or more, or --watch")
    service = f"""\
[Unit]
Description=mailsync run for account {account}
Documentation=man:mailsync(1)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={_exec(command + ["-q", "run", account])}
{_environment()}# 75: another run (or a watch) holds the account's lock; the next tick retries
SuccessExitStatus=75
"""
    timer = f"""\
[Unit]
Description=Run mailsync for account {account} every {every}
Documentation=man:mailsync(1)

[Timer]
OnBootSec=2min
OnUnitActiveSec={seconds}s
RandomizedDelaySec=30s
Unit={base}.service

[Install]
WantedBy=timers.target
"""
    return [Unit(f"{base}.service", service), Unit(f"{base}.timer", timer)]


def user_unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def install(made: list[Unit], directory: Path | None = None) -> list[Path]:
    directory = directory or user_unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in made:
        path = directory / unit.name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(unit.text)
        os.replace(tmp, path)
        written.append(path)
    return written


def enable_hint(made: list[Unit]) -> str:
    name = next((u.name for u in made if u.name.endswith(".timer")), made[0].name)
    return f"systemctl --user daemon-reload && systemctl --user enable --now {name}"
