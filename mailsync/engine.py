"""Runs each account's job under its lock and records the outcome in its state.

The CLI hands over accounts and options; this module picks the job (POP3 fetch or
IMAP sync), keeps one account's failure from stopping the others and records every
run for `mailsync status`.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable

from mailsync import crashpoints
from mailsync.config import Account
from mailsync.errors import LocalIOError, MailsyncError, UsageError
from mailsync.model import AccountResult
from mailsync.ports import Reporter
from mailsync.state import AccountLock, State


@dataclass(frozen=True)
class RunOptions:
    command: str                      # run | fetch | sync
    dry_run: bool = False
    keep: bool | None = None
    limit: int | None = None
    mode: str | None = None           # sync --mode overrides the account's mode
    folders: tuple[str, ...] = ()
    allow_mass_delete: bool = False
    allow_mass_copy: bool = False
    full: bool = False


def run_accounts(accounts: list[Account], options: RunOptions, reporter: Reporter,
                 clock: Callable[[], float] = time.time) -> list[AccountResult]:
    results = []
    for account in accounts:
        if crashpoints.stop_requested():
            break   # a signal stopped the run: later accounts wait for the next one
        results.append(run_account(account, options, reporter, clock))
    return results


def run_account(account: Account, options: RunOptions, reporter: Reporter,
                clock: Callable[[], float] = time.time) -> AccountResult:
    started_wall, started = clock(), time.monotonic()
    try:
        with _lock_unless_dry_run(account, options):
            state = State(account.state_dir, readonly=options.dry_run)
            try:
                result = _job(account, options, state, reporter, clock)
                result.seconds = time.monotonic() - started
                if not options.dry_run:
                    state.record_run(options.command, started_wall, result.as_json())
            except MailsyncError as exc:
                result = _failed(account, exc, started)
                _record_quietly(state, options, started_wall, result)
            finally:
                state.close()
    except sqlite3.Error as exc:
        result = _failed(account, LocalIOError(
            f"account {account.name}: state database error: {exc}",
            f"check free space and permissions of {account.state_dir}"), started)
    except MailsyncError as exc:
        result = _failed(account, exc, started)
    return result


def _lock_unless_dry_run(account: Account, options: RunOptions):
    # A dry run writes nothing, not even a lock file; it only reads.
    return contextlib.nullcontext() if options.dry_run else AccountLock(account.state_dir,
                                                                        account.name)


def _job(account: Account, options: RunOptions, state: State, reporter: Reporter,
         clock: Callable[[], float]) -> AccountResult:
    try:
        if account.protocol == "pop3":
            if options.command == "sync":
                raise UsageError(f"account {account.name} is a POP3 account",
                                 "use `mailsync fetch` (or `run`) for it")
            from mailsync.fetch import FetchOptions, fetch_account  # POP3 only
            return fetch_account(account, state, reporter,
                                 FetchOptions(options.dry_run, options.keep, options.limit),
                                 clock)
        from mailsync.sync import SyncOptions, sync_account  # IMAP only: keeps POP3 light
        mode = "pull" if options.command == "fetch" else (options.mode or account.mode)
        return sync_account(account, state, reporter, SyncOptions(
            mode=mode, dry_run=options.dry_run, folders=options.folders,
            allow_mass_delete=options.allow_mass_delete,
            allow_mass_copy=options.allow_mass_copy, full=options.full))
    except sqlite3.Error as exc:
        raise LocalIOError(f"account {account.name}: state database error: {exc}",
                           f"check free space and permissions of {account.state_dir}"
                           ) from None


def _failed(account: Account, exc: MailsyncError, started: float) -> AccountResult:
    return AccountResult(name=account.name, protocol=account.protocol, ok=False,
                         error=str(exc), exit_code=exc.exit_code,
                         seconds=time.monotonic() - started)


def _record_quietly(state: State, options: RunOptions, started: float,
                    result: AccountResult) -> None:
    if options.dry_run:
        return
    try:
        state.record_run(options.command, started, result.as_json())
    except sqlite3.Error:
        pass   # the failure itself is what the user needs to see


def overall_exit_code(results: list[AccountResult]) -> int:
    """0 when all succeed; one account's code when all fail alike; else 1 (partial)."""
    codes = {r.exit_code for r in results if not r.ok}
    if not codes:
        return 0
    if len(codes) == 1 and all(not r.ok for r in results):
        return codes.pop()
    if len(results) == 1:
        return results[0].exit_code
    return 1
