"""One POP3 account's run: settle what a crash left, list, plan, download, delete, QUIT.

Order that loses nothing: each batch is written to tmp/ and fsynced, its intents are
recorded, the files are renamed into new/ and the folder fsynced, then the batch is
confirmed in the state. DELE is sent only for messages the state already confirms,
and the server carries it out only at QUIT.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable

from mailsync import adoption, crashpoints
from mailsync.drivers import pop3
from mailsync.batching import batches
from mailsync.config import Account, resolve_secret
from mailsync.pop3fetch.deliver import Deliverer, deliverer_for
from mailsync.errors import ConfigError, Interrupted, MailsyncError, TemporaryError
from mailsync.pop3fetch.plan import FetchPlan, FetchPolicy, ServerMessage, plan_fetch
from mailsync.drivers.maildir import Maildir, TmpFile, unique_name
from mailsync.results import AccountResult
from mailsync.reporting import Reporter
from mailsync.state import State

BATCH_MESSAGES = 100
BATCH_BYTES = 64 << 20
STALE_TMP_SECONDS = 36 * 3600


@dataclass(frozen=True)
class FetchOptions:
    dry_run: bool = False
    keep: bool | None = None     # --keep overrides the account's keep
    limit: int | None = None     # --limit overrides the account's limit


def policy_for(account: Account, options: FetchOptions) -> FetchPolicy:
    keep = account.keep if options.keep is None else options.keep
    return FetchPolicy(keep=keep, keep_days=account.keep_days if keep else 0,
                       max_size=account.max_size,
                       limit=account.limit if options.limit is None else options.limit)


def fetch_account(account: Account, state: State, reporter: Reporter, options: FetchOptions,
                  clock: Callable[[], float] = time.time) -> AccountResult:
    """Fetch one account; the caller holds the account lock."""
    result = AccountResult(name=account.name, protocol="pop3", dry_run=options.dry_run)
    maildir = Maildir(account.maildir)
    deliverer = deliverer_for(account)    # None: into the account's own Maildir
    if not options.dry_run:
        if deliverer is None:
            maildir.create()
            settle_pending(state, maildir)
        else:
            settle_handed(state, reporter, account)
    session = pop3.connect(account, resolve_secret(account),
                           reporter.trace if _tracing(reporter) else None)
    try:
        session.capabilities()
        listing = session.listing()
        seen = {uid: s.downloaded_at for uid, s in state.pop_seen().items()}
        plan = plan_fetch(listing, seen, policy_for(account, options), clock())
        result.skipped = len(plan.too_large)
        result.left_for_later = plan.deferred
        for msg in plan.too_large:
            reporter.warn(f"account {account.name}: message {msg.number} ({msg.size} bytes) "
                          "is over max_size and stays on the server")
        if options.dry_run:
            result.plan = describe(plan)
            session.quit()
            return result
        to_delete = list(plan.deletes)
        already = _stored_by_others(state, maildir) if deliverer is None and plan.downloads \
            else None
        try:
            to_delete += _download(session, plan, maildir, state, reporter, result, clock,
                                   deliverer, already)
        finally:
            if deliverer is not None:
                deliverer.close()
        _delete(session, to_delete, result)
        session.quit()
        crashpoints.step("quit")
    except BaseException:
        session.abort()
        raise
    state.forget_seen(plan.forget)
    refused = deliverer.refusal_error() if deliverer is not None else None
    if refused is not None:   # after the others were delivered and deleted
        refused.partial = result   # what was delivered stays in the summary (engine)
        raise refused
    if options.keep and not account.keep and result.downloaded:
        reporter.warn(f"account {account.name}: {result.downloaded} message(s) stay on the "
                      "server this time (--keep), but keep = false: the next `mailsync run` "
                      "or `mailsync fetch` deletes them there")
    return result


def _tracing(reporter: Reporter) -> bool:
    return getattr(reporter, "tracing", False)


def describe(plan: FetchPlan) -> list[str]:
    """The plan in words, one line per action, for --dry-run."""
    lines = [f"download message {m.number} ({m.size} bytes)"
             + (", then delete it on the server" if plan.delete_after_download else "")
             for m in plan.downloads]
    lines += [f"delete message {m.number} on the server (stored by an earlier run)"
              for m in plan.deletes]
    lines += [f"leave message {m.number} ({m.size} bytes) on the server: over max_size"
              for m in plan.too_large]
    if plan.deferred:
        lines.append(f"leave {plan.deferred} new messages for a later run (limit)")
    return lines


def settle_pending(state: State, maildir: Maildir) -> None:
    """Finish or drop the deliveries a killed run left between tmp/ and the state."""
    pending = state.pop_pending()
    done, gone, publish = [], [], []
    for uid, key in pending.items():
        if maildir.find(key) is not None:
            done.append(uid)
        elif maildir.tmp_exists(key):
            publish.append(key)   # written and fsynced before its intent was recorded
            done.append(uid)
        else:
            gone.append(uid)
    if publish:
        maildir.publish(publish)
    state.confirm_pending(done)
    state.drop_pending(gone)
    _remove_stale_tmp(maildir)


def _remove_stale_tmp(maildir: Maildir) -> None:
    # The Maildir convention: a tmp/ file untouched for 36 hours is debris.
    cutoff = time.time() - STALE_TMP_SECONDS
    try:
        for path in (maildir.path / "tmp").iterdir():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
    except OSError:
        pass


class _Batch:
    """Messages of one batch: written to tmp/, then recorded, published, confirmed."""

    def __init__(self) -> None:
        self.keys: dict[int, str] = {}        # message number -> key
        self.uids: dict[int, str] = {}        # message number -> uid to record
        self.files: dict[int, TmpFile] = {}
        self.hashes: dict[int, "hashlib._Hash"] = {}


def _stored_by_others(state: State, maildir: Maildir) -> adoption.StoredMessages | None:
    """The messages of the Maildir that no run of this account stored, until one of its
    runs has completed: a Maildir getmail, fetchmail or mpop filled, a copy, or a lost
    state. A server message found among them is recorded, not stored twice."""
    if state.completed_a_fetch():
        return None
    recorded = {seen.key for seen in state.pop_seen().values()}
    files = [(key, entry) for key, entry in maildir.scan().items() if key not in recorded]
    return adoption.StoredMessages((key, data) for key, entry in files
                                   if (data := _read_or_none(maildir, entry)) is not None)


def _read_or_none(maildir: Maildir, entry) -> bytes | None:
    try:
        return maildir.read(entry)
    except OSError:
        return None   # moved or removed by a mail client meanwhile


def _download(session: pop3.Pop3Session, plan: FetchPlan, maildir: Maildir, state: State,
              reporter: Reporter, result: AccountResult, clock: Callable[[], float],
              deliverer: Deliverer | None = None,
              already: adoption.StoredMessages | None = None) -> list[ServerMessage]:
    """Download the plan's messages; return those now safe to delete on the server."""
    deletable: list[ServerMessage] = []
    if not plan.downloads:
        return deletable
    known_hashes = {uid for uid in state.pop_seen() if uid.startswith("sha256:")}
    reporter.transfer_started(f"{session.account.name}", len(plan.downloads),
                              plan.download_bytes)
    try:
        for batch in batches(plan.downloads, lambda m: m.size, BATCH_MESSAGES, BATCH_BYTES):
            if deliverer is None:
                stored = _download_batch(session, batch, maildir, state, reporter, result,
                                         known_hashes, clock, already)
            else:
                stored = _deliver_batch(session, batch, deliverer, state, reporter, result,
                                        known_hashes, clock)
            if plan.delete_after_download:
                deletable += stored
    finally:
        reporter.transfer_finished()
    return deletable


def _download_batch(session: pop3.Pop3Session, batch: list[ServerMessage], maildir: Maildir,
                    state: State, reporter: Reporter, result: AccountResult,
                    known_hashes: set[str], clock: Callable[[], float],
                    already: adoption.StoredMessages | None = None) -> list[ServerMessage]:
    by_number = {m.number: m for m in batch}
    b = _Batch()

    def open_sink(number: int) -> "_HashingSink":
        key = unique_name()
        b.keys[number] = key
        b.files[number] = maildir.open_tmp(key)
        b.hashes[number] = hashlib.sha256()
        return _HashingSink(b.files[number], b.hashes[number], by_number[number].uid is None)

    def done(number: int, size: int) -> None:
        b.files[number].close(durable=False)   # made durable with the batch
        crashpoints.step("written")
        msg = by_number[number]
        b.uids[number] = msg.uid or "sha256:" + b.hashes[number].hexdigest()
        result.bytes_downloaded += size
        reporter.transferred(msg.size, size)   # the server counts CRLF, we store LF

    stop: MailsyncError | None = None
    failed = True
    try:
        session.retrieve([m.number for m in batch], open_sink, done)
        failed = False
    except (Interrupted, TemporaryError) as exc:
        # A signal, or the link failed: the messages already complete are good; record
        # them first (a link that drops every few MB still makes progress), then stop.
        stop = exc
        failed = False
    finally:
        # On a local failure (a full disk) nothing of this batch gets recorded: its
        # complete files too would stay in tmp/ as debris, taking the space back.
        for number, f in b.files.items():
            if failed or number not in b.uids:
                f.abort()
    if b.uids:
        maildir.make_durable()   # before the intents are recorded and the files renamed
    duplicates = _drop_known_content(b, maildir, known_hashes)
    found = _drop_already_stored(b, maildir, already, duplicates) if already else {}
    fresh = [n for n in b.uids if n not in duplicates and n not in found]
    state.record_pending([(b.uids[n], b.keys[n]) for n in fresh]
                         + [(b.uids[n], key) for n, key in found.items()])
    crashpoints.step("recorded")
    maildir.publish(b.keys[n] for n in fresh)
    crashpoints.step("published")
    state.confirm_pending([b.uids[n] for n in fresh] + [b.uids[n] for n in found],
                          now=clock())
    crashpoints.step("confirmed")
    result.downloaded += len(fresh)
    result.paired += len(found)
    if stop is not None:
        raise stop
    return [by_number[n] for n in b.uids]


def _drop_known_content(b: _Batch, maildir: Maildir, known_hashes: set[str]) -> set[int]:
    """Without UIDL a message is known by its hash: discard copies already stored."""
    duplicates = set()
    for number, uid in b.uids.items():
        if not uid.startswith("sha256:"):
            continue
        if uid in known_hashes:
            maildir.discard_tmp(b.keys[number])
            duplicates.add(number)
        known_hashes.add(uid)
    return duplicates


def _drop_already_stored(b: _Batch, maildir: Maildir, already: adoption.StoredMessages,
                         duplicates: set[int]) -> dict[int, str]:
    """The messages of the batch the Maildir already holds (message number -> the key of
    that file): their downloaded copies are discarded, the old files stand for them."""
    found = {}
    for number in b.uids:
        if number in duplicates:
            continue
        key = already.take(maildir.read_tmp(b.keys[number]))
        if key is not None:
            maildir.discard_tmp(b.keys[number])
            found[number] = key
    return found


class _HashingSink:
    def __init__(self, tmp: TmpFile, digest: "hashlib._Hash", hashing: bool) -> None:
        self.tmp, self.digest, self.hashing = tmp, digest, hashing

    def write(self, data: bytes) -> None:
        self.tmp.write(data)
        if self.hashing:
            self.digest.update(data)


def _delete(session: pop3.Pop3Session, messages: list[ServerMessage],
            result: AccountResult) -> None:
    if not messages:
        return
    session.delete([m.number for m in messages])
    crashpoints.step("deleted")
    result.deleted_remote += len(messages)


# Delivery through an MDA or LMTP ------------------------------------------------------
DELIVER_KEY = "deliver:"   # the key (in pop_pending, pop_seen) of a message handed over


def settle_handed(state: State, reporter: Reporter, account: Account) -> None:
    """Messages a killed run had handed to the MDA or LMTP server without recording
    the answer: whether it took them is unknown. They are still on the server and not
    recorded, so this run delivers them again: they may arrive twice, and the user is
    told which."""
    handed = [uid for uid, key in state.pop_pending().items() if key.startswith(DELIVER_KEY)]
    for uid in handed:
        reporter.warn(f"account {account.name}: a run was stopped while message {uid} was "
                      f"being delivered ({account.deliver}); it is delivered again, so it "
                      "may arrive twice")
    state.drop_pending(handed)


class _MemorySink:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


def _deliver_batch(session: pop3.Pop3Session, batch: list[ServerMessage],
                   deliverer: Deliverer, state: State, reporter: Reporter,
                   result: AccountResult, known_hashes: set[str],
                   clock: Callable[[], float]) -> list[ServerMessage]:
    """Hand each message to the MDA or LMTP server as it arrives. Before: its intent is
    recorded; right after acceptance: its UIDL is recorded as delivered, in its own
    transaction. DELE comes later, for recorded messages only. Returns those accepted."""
    by_number = {m.number: m for m in batch}
    sinks: dict[int, _MemorySink] = {}
    delivered: list[ServerMessage] = []
    key = DELIVER_KEY + deliverer.account.deliver

    def open_sink(number: int) -> _MemorySink:
        sinks[number] = _MemorySink()
        return sinks[number]

    def done(number: int, size: int) -> None:
        msg = by_number[number]
        data = b"".join(sinks.pop(number).parts)
        uid = msg.uid or "sha256:" + hashlib.sha256(data).hexdigest()
        result.bytes_downloaded += size
        reporter.transferred(msg.size, size)   # as counted in the summary
        if uid in known_hashes:   # without UIDL: this content was delivered already
            delivered.append(msg)
            return
        state.record_pending([(uid, key)])    # handed over: its fate unknown until recorded
        try:
            crashpoints.step("handing")
            accepted = deliverer.deliver(number, data)
        except (Interrupted, ConfigError):    # the MDA never had it
            state.drop_pending([uid])
            raise
        if not accepted:
            state.drop_pending([uid])         # refused: it stays on the server
            return
        state.confirm_pending([uid], now=clock())   # delivered: recorded before anything else
        if uid.startswith("sha256:"):
            known_hashes.add(uid)
        result.downloaded += 1
        delivered.append(msg)
        crashpoints.step("delivered")

    session.retrieve([m.number for m in batch], open_sink, done)
    return delivered

