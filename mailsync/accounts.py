"""Runs each account's job under its lock and records the outcome in its state.

The CLI hands over accounts and options; this module picks the job (POP3 fetch or
IMAP sync), keeps one account's failure from stopping the others and records every
run for `mailsync status`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Callable

from mailsync import stopping
from mailsync.budget import HostBudget
from mailsync.config import Account
from mailsync.errors import (EX_TEMPFAIL, EX_UNAVAILABLE, LocalIOError, LockedError,
                             MailsyncError, UsageError, naming_account)
from mailsync.hooks import run_post_hook, run_pre_hook
from mailsync.results import AccountResult
from mailsync.reporting import Reporter
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


DEFAULT_JOBS = 8   # accounts at once: enough to hide one slow server, few threads
# One account's hook at a time, whatever --jobs: hooks such as `notmuch new` share one
# index between accounts and were written for runs one after another.
_HOOKS = threading.Lock()


def run_accounts(accounts: list[Account], options: RunOptions, reporter: Reporter,
                 clock: Callable[[], float] = time.time,
                 jobs: int = 1) -> list[AccountResult]:
    """Every account's run, up to `jobs` at once (one thread each), the results in
    the accounts' order. One account's failure or slowness holds up no other: each
    runs on its own worker, and a worker takes the next account as soon as it is
    free. Connections to one host stay within its budget (budget.py)."""
    budget = HostBudget()
    announce = getattr(reporter, "accounts_started", None)   # the progress view
    if announce is not None:
        announce([a.name for a in accounts])
    jobs = max(1, min(jobs, len(accounts)))
    if jobs == 1:
        results = []
        for account in accounts:
            if stopping.stop_requested():
                break   # a signal stopped the run: later accounts wait for the next one
            results.append(_budgeted(account, options, reporter, clock, budget))
        return results
    return _in_parallel(accounts, options, reporter, clock, budget, jobs)


def _in_parallel(accounts: list[Account], options: RunOptions, reporter: Reporter,
                 clock: Callable[[], float], budget: HostBudget,
                 jobs: int) -> list[AccountResult]:
    # Each engine imported once here, not by racing threads; only the ones in use.
    if any(a.protocol == "pop3" for a in accounts):
        import mailsync.pop3fetch.account  # noqa: F401
    if any(a.protocol == "imap" for a in accounts):
        import mailsync.imapsync.account  # noqa: F401
    waiting = list(reversed(list(enumerate(accounts))))
    results: dict[int, AccountResult] = {}
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if not waiting or stopping.stop_requested() or failures:
                    return
                index, account = waiting.pop()
            try:
                result = _budgeted(account, options, reporter, clock, budget)
            except BaseException as exc:   # a bug: ends the run after the others
                with lock:
                    failures.append(exc)
                return
            with lock:
                results[index] = result

    threads = [threading.Thread(target=worker, name=f"mailsync-account-{n}", daemon=True)
               for n in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)   # short waits: the main thread still takes SIGINT/SIGTERM
    if failures:
        raise failures[0]
    return [results[i] for i in sorted(results)]


def _budgeted(account: Account, options: RunOptions, reporter: Reporter,
              clock: Callable[[], float], budget: HostBudget) -> AccountResult:
    """run_account within the host's connection budget: an IMAP account runs with
    as many of its `connections` as the budget grants (at least one)."""
    want = account.connections if account.protocol == "imap" and not options.dry_run else 1
    granted = budget.take(account.host, min(want, account.max_connections_per_host),
                          account.max_connections_per_host)
    try:
        if account.protocol == "imap" and granted < account.connections:
            account = dataclasses.replace(account, connections=granted)
        result = run_account(account, options, reporter, clock)
    finally:
        budget.give(account.host, granted)
    done = getattr(reporter, "account_finished", None)
    if done is not None:
        done(result)
    return result


def run_account(account: Account, options: RunOptions, reporter: Reporter,
                clock: Callable[[], float] = time.time) -> AccountResult:
    """One account's run under its lock: pre_sync_command, the job, the record of the
    run (and of since when the account fails), then post_sync_command."""
    started_wall, started = clock(), time.monotonic()
    hooks = not options.dry_run   # a dry run changes nothing, runs nothing
    try:
        with _lock_unless_dry_run(account, options):
            state = State(account.state_dir, readonly=options.dry_run)
            ran = False
            try:
                if hooks and account.pre_sync_command:
                    with _HOOKS:
                        run_pre_hook(account, options.command, reporter)
                ran = True
                result = _job(account, options, state, reporter, clock)
                result.seconds = time.monotonic() - started
                if not options.dry_run:
                    state.record_run(options.command, started_wall, result.as_json())
                if not result.ok:   # e.g. some IMAP folders failed, the others synced
                    result.failing_since = _recorded_failing_since(state, started_wall)
            except MailsyncError as exc:
                result = _failed(account, exc, started)
                _record_quietly(state, options, started_wall, result)
                result.failing_since = _recorded_failing_since(state, started_wall)
            finally:
                state.close()
            if ran and hooks and account.post_sync_command and \
                    not stopping.stop_requested():
                with _HOOKS:
                    run_post_hook(account, options.command, result, reporter)
    except sqlite3.Error as exc:
        result = _failed(account, LocalIOError(
            f"account {account.name}: state database error: {exc}",
            f"check free space and permissions of {account.state_dir}"), started)
    except MailsyncError as exc:
        result = _failed(account, exc, started)
        if isinstance(exc, LockedError):
            result.failing_since = _failing_since_unlocked(account, started_wall)
    _hold_back_young_failure(account, result, clock())
    return result


def _recorded_failing_since(state: State, started: float) -> float | None:
    try:
        return state.failing_since()
    except sqlite3.Error:
        return started


def _failing_since_unlocked(account: Account, started: float) -> float:
    """Another run holds the lock: the account has not completed a run since its last
    failures began or, failing none, since that run took the lock."""
    times = [started]
    try:
        times.append((account.state_dir / "lock").stat().st_mtime)
    except OSError:
        pass
    try:
        state = State(account.state_dir, readonly=True)   # reads a copy: takes no lock
        try:
            since = state.failing_since()
        finally:
            state.close()
        if since is not None:
            times.append(since)
    except (MailsyncError, sqlite3.Error):
        pass
    return min(times)


def _hold_back_young_failure(account: Account, result: AccountResult, now: float) -> None:
    """report_after: a temporary failure (69, 75) of an account failing for less than
    that long is withheld under -q; its exit status is unchanged."""
    if result.ok or result.exit_code not in (EX_UNAVAILABLE, EX_TEMPFAIL):
        return
    since = result.failing_since if result.failing_since is not None else now
    result.withheld = account.report_after > 0 and now - since < account.report_after


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
            from mailsync.pop3fetch.account import FetchOptions, fetch_account  # POP3 only
            return fetch_account(account, state, reporter,
                                 FetchOptions(options.dry_run, options.keep, options.limit),
                                 clock)
        from mailsync.imapsync.account import SyncOptions, sync_account  # IMAP only: keeps POP3 light
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
    exc = naming_account(exc, account.name)   # every error says which account
    partial = getattr(exc, "partial", None)   # what an IMAP sync did before it ended
    if isinstance(partial, AccountResult):
        partial.ok, partial.error, partial.exit_code = False, str(exc), exc.exit_code
        partial.seconds = time.monotonic() - started
        return partial
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
