"""`mailsync watch`: stay running and keep every account in step.

Per account one thread owns the account's lock and state for the whole watch and runs
the same incremental sync as `mailsync run` (engine._job: sync_account for IMAP,
fetch_account for POP3), one at a time, whenever something asks for it:

- the server: NOTIFY (RFC 5465) on one connection covers every folder where the
  server has it; else one IDLE connection per `watch_folders` folder (INBOX by
  default, and All Mail on Gmail). Any untagged answer during IDLE asks for a sync.
  Every KEEPALIVE seconds IDLE is ended, a NOOP sent and IDLE begun again: traffic that
  keeps a NAT from forgetting the connection, and an answer that must come within the
  account's timeout, so a link that died without a word (a new network address, a
  NAT that dropped it) is found and replaced (KEEPALIVE is under the 29 minutes after
  which a server may end an IDLE). A change reported with the answer to DONE or NOOP
  asks for a pass like one reported during IDLE. A listener that loses its connection reconnects
  with capped exponential backoff and asks for a catch-up sync once it is back;
- the Maildir: inotify on every folder's new/ and cur/ (and on the folder
  directories, for new folders), debounced: a sync runs DEBOUNCE seconds after the
  last change, at most DEBOUNCE_MAX after the first;
- the clock: a full pass every `watch_full_sync` (default hourly) as a safety net;
  POP3 accounts are fetched every `poll_interval`;
- a failed sync (server down) is retried with the same capped backoff.

Every sync costs one log line (logfile.EventLog) and one record in the state (`mailsync
status` shows it), and the account's watch.json in its state_dir says what its
connection is doing. SIGTERM/SIGINT stop every account after the message in flight
(mailsync.stopping) and the watch exits 0; SIGHUP re-reads the config (accounts added,
removed or changed are restarted; a config that does not load is reported and the old
one kept). Under systemd (NOTIFY_SOCKET) it sends READY=1 once every account has made
its first pass, WATCHDOG=1 while its threads live, and STOPPING=1.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from mailsync import stopping
from mailsync.config import Account, Config, resolve_secret
from mailsync.errors import (EX_TEMPFAIL, EX_UNAVAILABLE, LockedError, MailsyncError,
                             TemporaryError, naming_account)
from mailsync.logfile import EventLog
from mailsync.reporting import SilentReporter
from mailsync.state import AccountLock, State

REIDLE = 24 * 60          # seconds in one IDLE at most (servers may end it at 29 minutes)
KEEPALIVE = 5 * 60        # seconds between NOOPs on a quiet IDLE connection
ALL_MAIL = ("[Gmail]/All Mail", "[Google Mail]/All Mail")   # where SPECIAL-USE is missing
DEBOUNCE = 0.25           # seconds of quiet in the Maildir before a sync
DEBOUNCE_MAX = 2.0        # a sync at most this long after the first unsynced change
BACKOFF_FIRST = 1.0       # seconds before the first reconnect or retry
BACKOFF_CAP = 300.0       # never more than this between attempts
TICK = 1.0                # loops look at the stop flag at least this often
TRANSIENT = (EX_TEMPFAIL, EX_UNAVAILABLE)
SUSPEND_GAP = 5.0         # seconds the machine slept (boot clock ahead of monotonic)


def _asleep() -> float:
    """Seconds spent suspended since boot (CLOCK_BOOTTIME counts them, CLOCK_MONOTONIC
    does not); 0 where the boot clock is missing."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()
    except (AttributeError, OSError):
        return 0.0


class Backoff:
    """1, 2, 4 ... seconds, capped."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> None:
        self.first, self.cap = first, cap
        self.current = first

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.first


# systemd ------------------------------------------------------------------------------

def sd_notify(message: str) -> bool:
    """Send a state line to systemd's notify socket (Type=notify); False without one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]   # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd set for this process (WatchdogSec=), if any."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 2e6, 0.5)
    except ValueError:
        return None


# Reporting ----------------------------------------------------------------------------

class WatchReporter(SilentReporter):
    """What the sync engines report, as event lines (no progress bars in a watch)."""

    tracing = False

    def __init__(self, log: EventLog, account: Account) -> None:
        self.log, self.account = log, account

    def warn(self, text: str) -> None:
        self.log.event(self.account.name, None, "warning", note=text,
                       paths=_paths(self.account))

    def error(self, text: str) -> None:
        self.log.event(self.account.name, None, "error", error=text,
                       paths=_paths(self.account))

    def detail(self, text: str) -> None:
        pass

    def trace(self, direction: str, line: str) -> None:
        pass


def _paths(account: Account) -> list[Path]:
    return [account.log_file] if account.log_file else []


def status_path(account: Account) -> Path:
    return account.state_dir / "watch.json"


def read_status(account: Account) -> dict | None:
    """The watch.json of a watch that is running now (its pid alive), else None."""
    try:
        data = json.loads(status_path(account).read_text())
        os.kill(int(data["pid"]), 0)
    except PermissionError:   # alive, another user's
        pass
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data


# One account --------------------------------------------------------------------------

class AccountWatch:
    """One account's watch: its sync loop (a thread) and, for IMAP, its listeners."""

    def __init__(self, account: Account, log: EventLog, lock: AccountLock) -> None:
        self.account, self.log, self.lock = account, log, lock
        self.name = account.name
        self.reporter = WatchReporter(log, account)
        self.stop_event = threading.Event()
        self.first_pass = threading.Event()   # the first sync ran (READY=1 waits for it)
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._mutex = threading.Lock()
        self._asked: list[str] = []
        self._listeners: list[threading.Thread] = []
        self._connections: dict[str, str] = {}
        self.thread = threading.Thread(target=self._main, name=f"watch-{self.name}",
                                       daemon=True)
        self.info: dict = {"pid": os.getpid(), "account": self.name,
                           "protocol": account.protocol,
                           "started": time.time(), "connection": "starting",
                           "last_sync": None, "last_result": None, "last_counts": {},
                           "syncs": 0, "syncing": False, "retry_at": None,
                           "next_full_sync": None}

    # Control ---------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def snapshot(self) -> dict:
        """A copy of what watch.json says (for the live view)."""
        with self._mutex:
            return dict(self.info)

    def ask(self, why: str) -> None:
        """Ask for a sync (from a listener thread)."""
        with self._mutex:
            self._asked.append(why)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._w, b"!")
        except (BlockingIOError, OSError):
            pass   # the pipe is full: the loop is awake already

    def _taken(self) -> list[str]:
        with self._mutex:
            asked, self._asked = self._asked, []
        return asked

    # The sync loop ---------------------------------------------------------------------
    def _main(self) -> None:
        state = None
        watcher = None
        try:
            state = State(self.account.state_dir)
            if self.account.protocol == "imap":
                watcher = LocalWatcher(self.account)
                self._start_listener(None)
            self._loop(state, watcher)
        except BaseException as exc:   # never let one account take the others down
            if not isinstance(exc, MailsyncError):
                exc = MailsyncError(f"{type(exc).__name__}: {exc}")
            self.log.event(self.name, None, "watch-failed", error=str(exc),
                           paths=_paths(self.account))
        finally:
            self.stop_event.set()
            self.first_pass.set()
            for t in self._listeners:
                t.join(10)
            if watcher is not None:
                watcher.close()
            if state is not None:
                state.close()
            self._set("connection", "stopped")
            os.close(self._r)
            os.close(self._w)
            self.lock.__exit__(None, None, None)

    def _loop(self, state: State, watcher: "LocalWatcher | None") -> None:
        pop3 = self.account.protocol == "pop3"
        every = self.account.poll_interval if pop3 else self.account.watch_full_sync
        now = time.monotonic()
        next_pass: float | None = now          # the first pass catches up at once
        retry_at: float | None = None
        backoff = Backoff()
        local_first = local_last = None
        pending: list[str] = []
        while not self.stop_event.is_set():
            now = time.monotonic()
            pending += self._taken()
            if "reconnected" in pending:
                retry_at = None                # the server is back: no need to wait
            if local_last is not None and (now - local_last >= DEBOUNCE
                                            or now - local_first >= DEBOUNCE_MAX):
                pending.append("local")
                local_first = local_last = None
            if next_pass is not None and now >= next_pass:
                pending.append("poll" if pop3 else "full")
            if pending and (retry_at is None or now >= retry_at):
                why = sorted(set(pending))
                pending = []
                code = self._sync(state, why)
                if watcher is not None:
                    watcher.rewatch()          # folders the sync created locally
                if self.stop_event.is_set():
                    break
                if code in TRANSIENT:
                    delay = backoff.next()
                    retry_at = time.monotonic() + delay
                    pending.append("retry")
                    self._set("retry_at", time.time() + delay)
                else:
                    backoff.reset()
                    retry_at = None
                    self._set("retry_at", None)
                if every > 0:
                    next_pass = time.monotonic() + every
                    self._set("next_full_sync", time.time() + every)
                else:
                    next_pass = None
                continue
            deadlines = [d for d in (next_pass, retry_at,
                                     None if local_last is None else
                                     min(local_last + DEBOUNCE, local_first + DEBOUNCE_MAX))
                         if d is not None]
            timeout = max(0.0, min([TICK, *(d - now for d in deadlines)]))
            fds = [self._r] + ([watcher.fd] if watcher is not None and watcher.fd >= 0 else [])
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            if self._r in ready:
                try:
                    while os.read(self._r, 4096):
                        pass
                except BlockingIOError:
                    pass
            if watcher is not None and watcher.fd in ready and watcher.changed(state):
                t = time.monotonic()
                local_first = local_first or t
                local_last = t

    def _sync(self, state: State, why: list[str]) -> int:
        """One pass of the account's own job; recorded and logged. Its exit code."""
        from mailsync.accounts import RunOptions, _failed, _job
        from mailsync.logfile import result_counts
        started_wall, started = time.time(), time.monotonic()
        command = "fetch" if self.account.protocol == "pop3" else "sync"
        self._set("syncing", True)
        try:
            result = _job(self.account, RunOptions(command="run"), state, self.reporter,
                          time.time)
            result.seconds = time.monotonic() - started
        except MailsyncError as exc:
            result = _failed(self.account, naming_account(exc, self.name), started)
        try:
            state.record_run("watch", started_wall, result.as_json())
        except Exception as exc:   # sqlite3.Error: said, and the watch goes on
            self.log.event(self.name, None, "error", error=f"state: {exc}",
                           paths=_paths(self.account))
        self.log.run_result(result, command, _paths(self.account))
        self.first_pass.set()
        with self._mutex:
            self.info["syncs"] += 1
            self.info["syncing"] = False
            self.info["last_result"] = "ok" if result.ok else \
                f"exit {result.exit_code}: {result.error}"
            self.info["last_counts"] = {k: v for k, v in result_counts(result).items() if v}
        self._set("last_sync", time.time())
        return 0 if result.ok else result.exit_code

    # Listeners -------------------------------------------------------------------------
    def _start_listener(self, folder: str | None) -> None:
        t = threading.Thread(target=self._listen, args=(folder,), daemon=True,
                             name=f"listen-{self.name}-{folder or 'notify'}")
        self._listeners.append(t)
        t.start()

    def _listen(self, folder: str | None) -> None:
        """Hold one connection waiting for the server's changes: NOTIFY when folder is
        None (the first listener; it turns into the IDLE listener of the first watch
        folder, and starts the others', when the server has no NOTIFY)."""
        from mailsync.drivers import imap
        backoff = Backoff()
        label = folder or "*"
        connected_before = False
        while not self.stop_event.is_set():
            session = None
            try:
                session = imap.connect(self.account, resolve_secret(self.account))
                if folder is None:
                    folders = idle_folders(self.account, session)
                    # NOTIFY with the first watch folder selected: its changes come as
                    # in IDLE, the other folders' as NOTIFY's STATUS answers.
                    session_folder = folders[0]
                    session.select(folders[0], readonly=True)
                    if not session.notify_set(selected=True):
                        folder, label = folders[0], folders[0]
                        for other in folders[1:]:
                            self._start_listener(other)
                else:
                    session.select(folder, readonly=True)
                how = f"NOTIFY, {session_folder} selected" if folder is None \
                    else f"IDLE {folder}"
                self._connection(label, f"connected ({how})")
                if connected_before:
                    self.log.event(self.name, folder, "reconnected",
                                   paths=_paths(self.account))
                    self.ask("reconnected")   # catch up with what happened meanwhile
                connected_before = True
                backoff.reset()
                self._idle(session, folder)
                session.logout()
            except imap.CommandRefused as exc:
                if session is not None:
                    session.abort()
                self._connection(label, f"not watched: {exc.message}")
                self.log.event(self.name, folder, "watch-refused", error=str(exc),
                               paths=_paths(self.account))
                return
            except MailsyncError as exc:
                if session is not None:
                    session.abort()
                delay = backoff.next()
                self._connection(label, f"reconnecting in {delay:g}s")
                self.log.event(self.name, folder, "disconnected", error=str(exc),
                               paths=_paths(self.account))
                self.stop_event.wait(delay)
            except BaseException as exc:   # a bug: said, and retried like a fault
                if session is not None:
                    session.abort()
                delay = backoff.next()
                self.log.event(self.name, folder, "listener-error",
                               error=f"{type(exc).__name__}: {exc}",
                               paths=_paths(self.account))
                self.stop_event.wait(delay)
        self._connection(label, "closed")

    def _idle(self, session, folder: str | None) -> None:
        slept = _asleep()
        while not self.stop_event.is_set():
            session.idle_start()
            began = time.monotonic()
            while not self.stop_event.is_set() and \
                    time.monotonic() - began < min(REIDLE, KEEPALIVE):
                events = session.idle_wait(TICK)
                if events:
                    self.ask("server " + ",".join(sorted({f or folder or "*"
                                                          for _, f in events})))
                if _asleep() - slept > SUSPEND_GAP:
                    # After a suspend the link is likely dead without a word (a new
                    # address, a NAT that forgot it): reconnect and catch up at once.
                    raise TemporaryError(f"account {self.name}: the machine was "
                                         "suspended; reconnecting", "")
            # DONE and NOOP must be answered within the account's timeout: a dead link
            # ends here in a TemporaryError, and the listener reconnects.
            ended = session.idle_done()
            if self.stop_event.is_set():
                break
            answered = session.noop()
            # A change the server held back comes with the answer to DONE or NOOP
            # (Dovecot reports the selected folder's half a second late). A session
            # that returns those answers (as idle_wait's events) lets only a real
            # change ask for a pass; one that does not (None) gets a catch-up pass,
            # so no change is left for the hourly full pass.
            if ended is None or answered is None:
                self.ask("keepalive")
            elif ended or answered:
                self.ask("server " + ",".join(sorted({f or folder or "*"
                                                      for _, f in [*ended, *answered]})))

    # watch.json ------------------------------------------------------------------------
    def _connection(self, label: str, text: str) -> None:
        with self._mutex:
            self._connections[label] = text
            summary = "; ".join(f"{k}: {v}" for k, v in sorted(self._connections.items()))
        self._set("connection", summary)

    def _set(self, key: str, value) -> None:
        with self._mutex:
            self.info[key] = value
            self.info["updated"] = time.time()
            data = json.dumps(self.info)
        path = status_path(self.account)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(data)
            os.replace(tmp, path)
        except OSError:
            pass


def idle_folders(account: Account, session) -> list[str]:
    """The folders a watch without NOTIFY IDLEs on: `watch_folders` when the config sets
    it; else INBOX, and on Gmail (X-GM-EXT-1, or provider = "gmail") All Mail too, which
    holds every message whatever its labels (mail a filter archives never reaches
    INBOX). The first one is also the folder selected with NOTIFY."""
    if account.watch_folders:
        return list(account.watch_folders)
    folders = ["INBOX"]
    if getattr(session, "gmail", False) or account.provider == "gmail":
        everything = _all_mail(session.list_folders())
        if everything is not None:
            folders.append(everything)
    return folders


def _all_mail(listed) -> str | None:
    """Gmail's All Mail: the folder with SPECIAL-USE \\All, else by its usual names."""
    selectable = [f for f in listed if f.selectable]
    for f in selectable:
        if "\\all" in {flag.lower() for flag in f.flags}:
            return f.name
    return next((f.name for f in selectable if f.name in ALL_MAIL), None)


# The Maildir --------------------------------------------------------------------------

class LocalWatcher:
    """inotify on an account's Maildir: every folder's new/ and cur/ for messages, and
    the folder directories for folders made or removed. Without inotify (another OS,
    no watches left) fd is -1 and the periodic full sync is the only local trigger."""

    def __init__(self, account: Account) -> None:
        from mailsync import inotify
        self.root = account.maildir
        self._inotify = None
        self.fd = -1
        try:
            self._inotify = inotify.Inotify()
            self.fd = self._inotify.fd
        except OSError:
            return
        self.rewatch()

    def rewatch(self) -> None:
        """Add watches for folders that appeared since (walks the directory tree)."""
        if self._inotify is None:
            return
        from mailsync import inotify
        dir_events = inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_DELETE \
            | inotify.IN_MOVED_FROM
        try:
            for top, dirs, _ in os.walk(self.root):
                dirs[:] = [d for d in dirs if d not in ("new", "cur", "tmp")]
                self._inotify.add(top, dir_events)
                for sub in ("new", "cur"):
                    path = os.path.join(top, sub)
                    if os.path.isdir(path):
                        self._inotify.add(path)
        except OSError:
            pass   # out of watches: what is watched still is

    def read(self) -> list:
        """The queued events (new folders get their watches at once)."""
        if self._inotify is None:
            return []
        events = self._inotify.read_events()
        if any(e.mask & 0x40000000 or e.overflow for e in events):   # a directory
            self.rewatch()
        return events

    def changed(self, state: State | None = None) -> bool:
        """Read the queued events: True when one may need a sync. With the state, a
        message event the state already agrees with (the file a sync just wrote,
        renamed or removed) needs none: watch's own writes do not wake it again."""
        events = self.read()
        if state is None:
            return bool(events)
        try:
            return self._disagrees(state, events)
        except Exception:   # sqlite3.Error, a vanished folder: look, to be sure
            return True

    def _disagrees(self, state: State, events: list) -> bool:
        from mailsync import inotify
        from mailsync.drivers.maildir import split_name
        folders = {os.path.normpath(os.path.join(self.root, r.relpath)): r.name
                   for r in state.folder_records()}
        for e in events:
            if e.overflow or e.mask & inotify.IN_ISDIR:
                return True
            if e.name.startswith("."):
                continue                    # not a message file (Maildir ignores them)
            parent, sub = os.path.split(e.path)
            folder = folders.get(os.path.normpath(parent))
            if sub not in ("new", "cur") or folder is None:
                return True
            key, info = split_name(e.name)
            row = state.db.execute("SELECT flags FROM pairs WHERE folder = ? AND key = ?",
                                   (folder, key)).fetchone()
            if e.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
                if not os.path.exists(os.path.join(e.path, e.name)):
                    continue                # renamed again: a later event says where
                if row is None or set(row[0]) != {c for c in info if c in "DFPRST"}:
                    return True             # a file the state does not know like this
            elif row is not None and not self._holds(parent, key):
                return True                 # a synced message gone: deleted or moved
        return False

    @staticmethod
    def _holds(folder: str, key: str) -> bool:
        if os.path.exists(os.path.join(folder, "new", key)):
            return True
        try:
            return any(n == key or n.startswith(key + ":") for n in
                       os.listdir(os.path.join(folder, "cur")))
        except OSError:
            return False

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
            self.fd = -1


# The whole watch ----------------------------------------------------------------------

class Watch:
    """Every selected account's AccountWatch; signals; SIGHUP reload; systemd."""

    def __init__(self, load: Callable[[], Config], names: tuple[str, ...], log: EventLog,
                 view=None) -> None:
        self.load, self.names, self.log, self.view = load, names, log, view
        self.accounts: dict[str, AccountWatch] = {}
        self.configs: dict[str, Account] = {}
        self._stop = threading.Event()
        self._reload = threading.Event()

    def run(self) -> int:
        config = self.load()
        accounts = config.select(self.names)
        self._install_signals()
        if self.view is not None:
            self.view.start(lambda: [a.snapshot() for a in list(self.accounts.values())])
        try:
            return self._run(accounts)
        finally:
            if self.view is not None:
                self.view.stop()

    def _run(self, accounts: list[Account]) -> int:
        locked_out = self._start(accounts)
        if not self.accounts:
            return EX_TEMPFAIL if locked_out else 1
        self._ready()
        dog = watchdog_interval()
        last_dog = 0.0
        while not self._stop.is_set():
            self._stop.wait(min(TICK, dog or TICK))
            if self._reload.is_set():
                self._reload.clear()
                self._reread()
            if dog and time.monotonic() - last_dog >= dog and \
                    all(a.alive() for a in self.accounts.values()):
                sd_notify("WATCHDOG=1")
                last_dog = time.monotonic()
            if not any(a.alive() for a in self.accounts.values()):
                self.log.event("-", None, "stopped", note="no account is left to watch")
                return 1   # each one's failure was logged
        sd_notify("STOPPING=1")
        self.log.event("-", None, "stopping",
                       note=f"stopped by {self._signal_name()}; finishing the message "
                       "in flight")
        for a in self.accounts.values():
            a.stop()
        for a in self.accounts.values():
            a.join()
        self.log.event("-", None, "stopped")
        return 0

    def _signal_name(self) -> str:
        sig = stopping.stop_signal()
        return signal.Signals(sig).name if sig else "request"

    def _start(self, accounts: list[Account]) -> int:
        """Lock and start each account; the number that another run holds locked."""
        locked_out = 0
        for account in accounts:
            lock = AccountLock(account.state_dir, account.name)
            try:
                lock.__enter__()
            except LockedError as exc:
                locked_out += 1
                self.log.event(account.name, None, "locked", error=str(exc),
                               paths=_paths(account))
                continue
            except MailsyncError as exc:
                self.log.event(account.name, None, "watch-failed", error=str(exc),
                               paths=_paths(account))
                continue
            watch = AccountWatch(account, self.log, lock)
            self.accounts[account.name] = watch
            self.configs[account.name] = account
            self.log.event(account.name, None, "watching", paths=_paths(account))
            watch.start()
        return locked_out

    def _ready(self) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        def ready() -> None:   # noqa: E306 -- after every account's first pass
            for a in list(self.accounts.values()):
                a.first_pass.wait()
            sd_notify("READY=1\nSTATUS=watching " + ", ".join(self.accounts))
        threading.Thread(target=ready, daemon=True, name="sd-ready").start()

    def _reread(self) -> None:
        sd_notify("RELOADING=1")
        try:
            config = self.load()
            accounts = {a.name: a for a in config.select(self.names)}
        except MailsyncError as exc:
            self.log.event("-", None, "reload-failed", error=str(exc))
            sd_notify("READY=1")
            return
        for name in list(self.accounts):
            if accounts.get(name) != self.configs[name]:
                self.accounts[name].stop()
                self.accounts[name].join()
                del self.accounts[name], self.configs[name]
        self._start([a for name, a in accounts.items() if name not in self.accounts])
        self.log.event("-", None, "reloaded", {"accounts": len(self.accounts)})
        sd_notify("READY=1")

    def _install_signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            stopping.request_stop(signum)   # a second signal: at once
            self._stop.set()

        def reload(signum: int, frame: object) -> None:
            self._reload.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)


def watch_accounts(load: Callable[[], Config], names: tuple[str, ...], log: EventLog,
                   view=None) -> int:
    """Run the watch; view: a watchview.WatchView on a terminal, else None (log lines)."""
    return Watch(load, names, log, view).run()
