"""pre_sync_command and post_sync_command: the user's commands around an account's run.

Both run through the shell with the account's details in MAILSYNC_* environment
variables, stdin from /dev/null and their output captured (shown with -v), so that
neither cron mail nor --json output fills with it. A pre command that fails skips the
account; a post command that fails is reported, and the run's own result stands.
"""

from __future__ import annotations

import os
import subprocess

from mailsync.config import Account
from mailsync.errors import ConfigError, TemporaryError
from mailsync.results import COUNTS, AccountResult
from mailsync.reporting import Reporter

NOT_RUNNABLE = (126, 127)   # the shell's "cannot execute" and "command not found"


def hook_env(account: Account, command: str, result: AccountResult | None = None
             ) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MAILSYNC_ACCOUNT": account.name, "MAILSYNC_PROTOCOL": account.protocol,
                "MAILSYNC_COMMAND": command, "MAILSYNC_MAILDIR": str(account.maildir)})
    if result is not None:
        env["MAILSYNC_EXIT_CODE"] = str(result.exit_code)
        env["MAILSYNC_ERROR"] = result.error or ""
        for name in COUNTS:
            env[f"MAILSYNC_{name.upper()}"] = str(getattr(result, name, 0))
    return env


def _run(account: Account, key: str, command: str, env: dict[str, str],
         reporter: Reporter) -> tuple[int, str]:
    """(exit status, first line of its error output); -1 when it could not start."""
    try:
        done = subprocess.run(command, shell=True, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True)
    except OSError as exc:
        return -1, exc.strerror or str(exc)
    for stream in (done.stdout, done.stderr):
        for line in stream.decode("utf-8", "replace").splitlines():
            if line.strip():
                reporter.detail(f"account {account.name}: {key}: {line}")
    said = next((ln.strip() for ln in done.stderr.decode("utf-8", "replace").splitlines()
                 if ln.strip()), "")
    return done.returncode, said[:300]


def _failure(account: Account, key: str, code: int, said: str) -> str:
    how = "could not be started" if code == -1 else \
        f"was killed by signal {-code}" if code < 0 else f"failed with exit status {code}"
    return f"account {account.name}: {key} {how}" + (f": {said}" if said else "")


def run_pre_hook(account: Account, command: str, reporter: Reporter) -> None:
    """Run pre_sync_command; raise (the account is then skipped) if it fails."""
    assert account.pre_sync_command is not None
    code, said = _run(account, "pre_sync_command", account.pre_sync_command,
                      hook_env(account, command), reporter)
    if code == 0:
        return
    message = _failure(account, "pre_sync_command", code, said)
    if code == -1 or code in NOT_RUNNABLE:
        raise ConfigError(message, "the account was skipped; fix pre_sync_command in the "
                          "config")
    raise TemporaryError(message, "the account was skipped; it runs once pre_sync_command "
                         "succeeds")


def run_post_hook(account: Account, command: str, result: AccountResult,
                  reporter: Reporter) -> None:
    """Run post_sync_command; a failure is reported, the run's result is left as it is."""
    assert account.post_sync_command is not None
    code, said = _run(account, "post_sync_command", account.post_sync_command,
                      hook_env(account, command, result), reporter)
    if code != 0:
        outcome = "succeeded" if result.ok else f"ended with exit status {result.exit_code}"
        reporter.error(f"{_failure(account, 'post_sync_command', code, said)} (the "
                       f"{command} itself {outcome}; its result stands)")
