"""The pure sync decision for ONE IMAP folder and its Maildir folder.

``plan_folder(remote, local, last, policy) -> FolderPlan`` compares each side with the
last-synced record (never side with side) and returns every action before any IO runs.
This module imports only the standard library's dataclasses and typing: no os, sqlite3,
imapclient, click or rich (a test checks this). Sides are always named remote, local, last.

Flags are frozensets of Maildir letters "DFPRST" (D=Draft, F=Flagged, P=Passed/$Forwarded,
R=Replied/Answered, S=Seen, T=Trashed/\\Deleted). T is just a flag: nothing is expunged
because of it. The constructors accept any iterable of letters ("FS" works) and store a
frozenset; an unknown letter raises ValueError.

The last-synced record is a list of ``Pair``. A pair with both ids is a message present on
both sides at the last sync. A one-sided pair is a *tombstone* that stops re-transfer:

- ``Pair(uid, None)``: deliberately absent locally. Written in pull/backup mode when the user
  deletes a message locally; the message is not downloaded again.
- ``Pair(None, key)``: deliberately absent on the server. Written in push/backup mode when
  the server expunged a message that stays local, and in sync mode for a headers-first stub
  whose server message was expunged after the stub was changed locally (a stub can't be
  uploaded); the message is not uploaded again.

Decisions (where the contract left a choice)
--------------------------------------------
- Tombstones are respected in every mode, sync included: a decision taken under another mode
  is never undone by deleting or re-transferring (switching backup -> sync does not delete
  the archive, pull -> sync does not expunge what was deleted locally). A tombstone is
  forgotten once its remaining side is gone too.
- Modification beats deletion in sync mode only (deleted locally + flags changed on the server
  -> Download again; expunged on the server + flags changed locally -> Upload again), unless
  the change marks the message deleted (T added): that side agrees with the deletion. It is
  also what an expunge killed between its STORE \\Deleted and its UID EXPUNGE leaves, which
  must not bring back the message the user deleted. The
  one-way modes record the master side's flags, so a change on the other side can't be told
  from a standing difference: in pull a server expunge always deletes locally, in push a
  local deletion always expunges (backup never deletes locally anyway).
- Pull/backup record the server's flags as last, push the local flags, so local-only (pull)
  or server-only (push) flag differences persist without being re-applied every run.
- Headers-first: a new or re-downloaded server message larger than max_size arrives as a stub
  unless ``full`` or it is already flagged F (it would be upgraded at once). A stub is upgraded
  (UpgradePlaceholder, which also sets its local flags) when F is in its wanted local flags,
  whichever side set it, when S was set on it locally since the last sync and not on the
  server (the user opened it in the mail client: in every run, so `watch` fetches the body
  within seconds and a cron run on its next tick; S set on the server, read elsewhere,
  does not fetch it, and S on both sides may be a carried-over flag whose record a crash
  lost, so it does not either), or
  under ``full``; in every mode, push included (an upgrade completes
  the local copy on the user's request, it applies no server change). A stub is never
  uploaded. Deleting a stub locally in sync/push mode expunges the server message like any
  deliberate local delete (the user saw its headers; keeping it would leave a message that
  can never be reached again without special cases).
- Sync window (``policy.window``, the server UIDs inside ``max_age``/``max_messages``; None:
  no window): a server message outside it is not downloaded, and its local copy is removed
  (DeleteLocal with ``window=True``, the pair forgotten) after any local flag change was
  pushed, in every mode. Nothing is ever expunged because of the window: a pair outside it
  whose local copy is gone is only forgotten (also what a removal killed before its record
  leaves). Window removals do not count for the mass-delete guard. The forgotten server
  message is new again on a later run and is downloaded once the window holds it again.
- A refused plan carries no actions at all (not even safe ones): the folder stays exactly as
  it was until the user reruns with --allow-mass-delete or fixes the cause. The guard counts
  ExpungeRemote against pairs with a uid (server) and DeleteLocal against pairs with a key
  (local); "suddenly empty" is checked in every mode, since recording tombstones for a
  folder that merely vanished would be as surprising as deleting.

Executor contract (keep the executor thin)
------------------------------------------
Run ``plan.actions`` in order; they are sorted in phases (``action.phase``): TRANSFER
(Download, Upload, UpgradePlaceholder), then FLAGS (SetRemoteFlags, SetLocalFlags, Record),
then DELETE (ExpungeRemote, DeleteLocal, Forget), so a crash never deletes before the copy
exists. After an action's IO succeeded::

    new = action.pair_after(uid=<new uid for Upload>, key=<chosen key for Download>)
    if new is None:
        state.forget(uid=action.uid, key=action.key)   # ExpungeRemote, DeleteLocal, Forget
    else:
        state.put(new)

``state.put(pair)`` replaces every stored pair that shares the new pair's uid (if not None)
or key (if not None); ``state.forget(uid, key)`` drops the pairs matching either non-None id.
Download needs the Maildir key the executor chose (choose it before writing, so a crash can
be settled); Upload needs the uid the server gave (APPENDUID or a search by Message-ID).
Every other action ignores the arguments. Each flag action carries the exact pair to record:
when both sides of one message change, the first action records the old last-synced flags
and the last one the merged flags, so any prefix of a plan (with its records) re-plans to the
same result. Flag actions are idempotent, but one whose IO ran and whose record was lost
would make a later change by the user on the changed side look like the other side's
change, so the engine journals them too. Download and Upload create messages, so their
intent must be journalled with the chosen key / an upload token before the IO (engine's
job: see mailsync.imapsync.recovery).
"""

from dataclasses import dataclass, field
from typing import ClassVar, Iterable, Mapping

from mailsync.modes import CHANGE_SERVER, DELETE_LOCAL, MODES

__all__ = [
    "FLAG_LETTERS", "MODES", "MASS_DELETE_HINT", "TRANSFER", "FLAGS", "DELETE",
    "RemoteMsg", "LocalMsg", "Pair", "Policy",
    "Action", "Download", "Upload", "UpgradePlaceholder", "SetRemoteFlags", "SetLocalFlags",
    "ExpungeRemote", "DeleteLocal", "Record", "Forget",
    "PlanCounts", "FolderPlan", "plan_folder",
]

FLAG_LETTERS = frozenset("DFPRST")
MASS_DELETE_HINT = "rerun with --allow-mass-delete if this is intended"

TRANSFER, FLAGS, DELETE = 1, 2, 3


_FLAG_SETS: dict[str, frozenset[str]] = {}   # "FS" -> frozenset("FS"), per spelling seen


def _flags(value: Iterable[str]) -> frozenset[str]:
    # Tens of thousands of snapshot objects per run: the common cases are shortcuts.
    if type(value) is frozenset and value <= FLAG_LETTERS:
        return value
    if type(value) is str and (known := _FLAG_SETS.get(value)) is not None:
        return known
    letters = frozenset(value)
    unknown = letters - FLAG_LETTERS
    if unknown:
        raise ValueError(f"unknown Maildir flag letter(s) {''.join(sorted(unknown))!r}; "
                         f"expected letters from 'DFPRST'")
    if type(value) is str and len(_FLAG_SETS) < 256:
        _FLAG_SETS[value] = letters
    return letters


def _normalise_flags(obj, name: str = "flags") -> None:
    value = getattr(obj, name)
    letters = _flags(value)
    if letters is not value:
        object.__setattr__(obj, name, letters)


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class RemoteMsg:
    """One message in the server folder. ``size`` is the RFC822.SIZE in bytes."""

    uid: int
    flags: frozenset[str]
    size: int

    def __post_init__(self) -> None:
        _normalise_flags(self)


@dataclass(frozen=True)
class LocalMsg:
    """One message in the Maildir. ``key`` is the unique name without ":2,<info>".

    ``placeholder`` is True for a headers-first stub (the engine sets it from the state or a
    marker in the file); the planner treats a message as a placeholder when either this or
    the pair says so.
    """

    key: str
    flags: frozenset[str]
    placeholder: bool = False

    def __post_init__(self) -> None:
        _normalise_flags(self)


@dataclass(frozen=True)
class Pair:
    """The last-synced record of one message. See the module docstring for one-sided pairs.

    ``flags`` are the flags both sides agreed on at the last sync (in pull/backup mode the
    server's flags, in push mode the local flags: the one-way modes track the master side).
    ``placeholder`` is True while the local copy is a headers-first stub.
    """

    uid: int | None
    key: str | None
    flags: frozenset[str] = frozenset()
    placeholder: bool = False

    def __post_init__(self) -> None:
        if self.uid is None and self.key is None:
            raise ValueError("a Pair needs a uid, a key or both")
        _normalise_flags(self)


@dataclass(frozen=True)
class Policy:
    """How one folder is synced.

    mode: sync | pull | push | backup. max_delete: share of a side's known messages one run
    may delete. allow_mass_delete: skip the mass-delete guard. max_size: bytes above which a
    new server message arrives headers-first (0 = no limit). full: upgrade every placeholder
    and download nothing headers-first.
    """

    mode: str = "sync"
    max_delete: float = 0.5
    allow_mass_delete: bool = False
    max_size: int = 0
    full: bool = False
    window: frozenset[int] | None = None   # server UIDs inside the sync window; None: all

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if not 0 <= self.max_delete <= 1:
            raise ValueError(f"max_delete must be between 0 and 1, not {self.max_delete!r}")
        if self.max_size < 0:
            raise ValueError(f"max_size must be >= 0, not {self.max_size!r}")


# --------------------------------------------------------------------------- actions


class Action:
    """Base of all actions. ``phase`` orders execution; ``pair_after`` says what to record."""

    phase: ClassVar[int]
    uid: int | None
    key: str | None

    def pair_after(self, *, uid: int | None = None, key: str | None = None) -> Pair | None:
        """The pair to store once this action succeeded; None = forget (uid, key)."""
        raise NotImplementedError


class RecordsItsPair(Action):
    """An action that carries the exact pair to record once it ran."""

    pair: Pair

    def pair_after(self, *, uid: int | None = None, key: str | None = None) -> Pair:
        return self.pair


@dataclass(frozen=True)
class Download(Action):
    """Copy server message ``uid`` into the Maildir with ``flags`` (headers only if asked)."""

    uid: int
    flags: frozenset[str]
    headers_only: bool = False
    phase: ClassVar[int] = TRANSFER
    key: ClassVar[None] = None

    def __post_init__(self) -> None:
        _normalise_flags(self)

    def pair_after(self, *, uid: int | None = None, key: str | None = None) -> Pair:
        if key is None:
            raise ValueError("Download.pair_after needs the Maildir key the executor chose")
        return Pair(self.uid, key, self.flags, placeholder=self.headers_only)


@dataclass(frozen=True)
class Upload(Action):
    """APPEND local message ``key`` to the server folder with ``flags``."""

    key: str
    flags: frozenset[str]
    phase: ClassVar[int] = TRANSFER
    uid: ClassVar[None] = None

    def __post_init__(self) -> None:
        _normalise_flags(self)

    def pair_after(self, *, uid: int | None = None, key: str | None = None) -> Pair:
        if uid is None:
            raise ValueError("Upload.pair_after needs the uid the server gave the message")
        return Pair(uid, self.key, self.flags)


@dataclass(frozen=True)
class UpgradePlaceholder(RecordsItsPair):
    """Replace local stub ``key`` in place by the full server message ``uid``, with ``flags``
    as its local flags (so no SetLocalFlags is planned with it). ``pair`` is recorded after.
    """

    uid: int
    key: str
    flags: frozenset[str]
    pair: Pair
    phase: ClassVar[int] = TRANSFER

    def __post_init__(self) -> None:
        _normalise_flags(self)


@dataclass(frozen=True)
class SetRemoteFlags(RecordsItsPair):
    """STORE +FLAGS ``add`` / -FLAGS ``remove`` on ``uid`` (other server keywords are kept).
    ``pair`` is recorded after."""

    uid: int
    add: frozenset[str]
    remove: frozenset[str]
    pair: Pair
    phase: ClassVar[int] = FLAGS

    def __post_init__(self) -> None:
        _normalise_flags(self, "add")
        _normalise_flags(self, "remove")

    @property
    def key(self) -> str | None:
        return self.pair.key


@dataclass(frozen=True)
class SetLocalFlags(RecordsItsPair):
    """Rename local message ``key`` so its flags are exactly ``flags``. ``pair`` is recorded."""

    key: str
    flags: frozenset[str]
    pair: Pair
    phase: ClassVar[int] = FLAGS

    def __post_init__(self) -> None:
        _normalise_flags(self)

    @property
    def uid(self) -> int | None:
        return self.pair.uid


@dataclass(frozen=True)
class ExpungeRemote(Action):
    """Expunge ``uid`` on the server. ``key`` is the (already gone) local side of the pair,
    given for the executor and the UI; the pair is forgotten after."""

    uid: int
    key: str | None = None
    phase: ClassVar[int] = DELETE

    def pair_after(self, *, uid: int | None = None, key: str | None = None) -> None:
        return None


@dataclass(frozen=True)
class DeleteLocal(Action):
    """Remove local message ``key``. ``uid`` is the (already expunged) server side of the pair;
    the pair is forgotten after."""

    key: str
    uid: int | None = None
    window: bool = False     # the server message left the sync window: local removal only
    phase: ClassVar[int] = DELETE

    def pair_after(self, *, uid: int | None = None, key: str | None = None) -> None:
        return None


@dataclass(frozen=True)
class Record(RecordsItsPair):
    """No IO: store ``pair`` (new last-synced flags, or a tombstone)."""

    pair: Pair
    phase: ClassVar[int] = FLAGS

    @property
    def uid(self) -> int | None:
        return self.pair.uid

    @property
    def key(self) -> str | None:
        return self.pair.key


@dataclass(frozen=True)
class Forget(Action):
    """No IO: both sides are gone; drop the pair (uid, key)."""

    uid: int | None
    key: str | None
    phase: ClassVar[int] = DELETE

    def pair_after(self, *, uid: int | None = None, key: str | None = None) -> None:
        return None


# Execution order inside a phase. For one message the flag actions must run in this order
# (upgrade, then remote, then local): the intermediate pairs they carry rely on it.
_RANK = {Download: 0, Upload: 1, UpgradePlaceholder: 2, SetRemoteFlags: 3, SetLocalFlags: 4,
         Record: 5, ExpungeRemote: 6, DeleteLocal: 7, Forget: 8}


def _order(action: Action) -> tuple:
    uid, key = action.uid, action.key
    return (action.phase, _RANK[type(action)], uid is None, uid or 0, key or "")


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlanCounts:
    """How many of each action ``FolderPlan.actions`` holds (all zero when refused)."""

    download: int = 0
    upload: int = 0
    upgrade: int = 0
    remote_flags: int = 0
    local_flags: int = 0
    expunge_remote: int = 0
    delete_local: int = 0
    record: int = 0
    forget: int = 0

    @classmethod
    def of(cls, actions: Iterable[Action]) -> "PlanCounts":
        names = {Download: "download", Upload: "upload", UpgradePlaceholder: "upgrade",
                 SetRemoteFlags: "remote_flags", SetLocalFlags: "local_flags",
                 ExpungeRemote: "expunge_remote", DeleteLocal: "delete_local",
                 Record: "record", Forget: "forget"}
        tally = dict.fromkeys(names.values(), 0)
        for action in actions:
            tally[names[type(action)]] += 1
        return cls(**tally)


@dataclass(frozen=True)
class FolderPlan:
    """The plan for one folder.

    When ``refused`` is set (the mass-delete guard tripped) ``actions`` is empty: the folder
    is left exactly as it is, not even safe transfers run, so the next run sees the same
    situation and the user decides. ``counts`` always describes ``actions``.
    """

    actions: tuple[Action, ...] = ()
    refused: str | None = None
    counts: PlanCounts = field(default_factory=PlanCounts)


def plan_folder(remote: Mapping[int, RemoteMsg], local: Mapping[str, LocalMsg],
                last: Iterable[Pair], policy: Policy = Policy()) -> FolderPlan:
    """Decide everything for one folder. ``remote`` and ``local`` are complete snapshots."""
    pairs = _checked(last)
    actions: list[Action] = []
    for pair in pairs:
        r = remote.get(pair.uid) if pair.uid is not None else None
        lm = local.get(pair.key) if pair.key is not None else None
        actions += _plan_pair(pair, r, lm, policy)
    paired_uids = {p.uid for p in pairs if p.uid is not None}
    paired_keys = {p.key for p in pairs if p.key is not None}
    for uid in sorted(set(remote) - paired_uids):
        actions += _plan_new_remote(remote[uid], policy)
    for key in sorted(set(local) - paired_keys):
        actions += _plan_new_local(local[key], policy)
    actions.sort(key=_order)
    refused = _mass_delete_guard(actions, remote, local, pairs, policy)
    if refused:
        return FolderPlan((), refused, PlanCounts())
    return FolderPlan(tuple(actions), None, PlanCounts.of(actions))


def _checked(last: Iterable[Pair]) -> list[Pair]:
    pairs = list(last)
    uids = [p.uid for p in pairs if p.uid is not None]
    keys = [p.key for p in pairs if p.key is not None]
    if len(uids) != len(set(uids)) or len(keys) != len(set(keys)):
        raise ValueError("the last-synced record names a uid or key twice")
    return pairs


def _outside(r: RemoteMsg | None, policy: Policy) -> bool:
    return r is not None and policy.window is not None and r.uid not in policy.window


def _plan_outside(p: Pair, r: RemoteMsg, lm: LocalMsg | None, policy: Policy) -> list[Action]:
    """The server message left the sync window: the local copy goes, the server's stays."""
    if lm is None:
        return [Forget(p.uid, p.key)]       # never an expunge because of the window
    pushed = [a for a in _plan_flags(p, r, lm, policy) if isinstance(a, SetRemoteFlags)] \
        if policy.mode in CHANGE_SERVER else []
    return pushed + [DeleteLocal(lm.key, p.uid, window=True)]


def _plan_pair(p: Pair, r: RemoteMsg | None, lm: LocalMsg | None, policy: Policy) -> list[Action]:
    mode = policy.mode
    if p.key is not None and p.uid is not None and _outside(r, policy):
        return _plan_outside(p, r, lm, policy)
    if p.uid is None:                       # tombstone: deliberately absent on the server
        return [] if lm else [Forget(None, p.key)]
    if p.key is None:                       # tombstone: deliberately absent locally
        return [] if r else [Forget(p.uid, None)]
    if r and lm:
        return _plan_flags(p, r, lm, policy)
    if not r and not lm:                    # gone on both sides
        return [Forget(p.uid, p.key)]
    if r:                                   # deleted locally, still on the server
        if mode == "sync" and _kept_by_change(p.flags, r.flags):
            # modification beats deletion: flags changed on the server -> fetch it again
            return [Download(r.uid, r.flags, _headers_only(r, policy))]
        if mode in CHANGE_SERVER:
            return [ExpungeRemote(p.uid, p.key)]
        return [Record(Pair(p.uid, None, r.flags))]          # pull/backup: stays local
    placeholder = p.placeholder or lm.placeholder           # expunged on the server, still local
    if mode == "sync" and _kept_by_change(p.flags, lm.flags):
        # modification beats deletion: flags changed locally -> upload it again; a stub
        # can't be uploaded, so it stays local only
        if not placeholder:
            return [Upload(lm.key, lm.flags)]
        return [Record(Pair(None, lm.key, lm.flags, True))]
    if mode in DELETE_LOCAL:
        return [DeleteLocal(lm.key, p.uid)]
    return [Record(Pair(None, lm.key, lm.flags, placeholder))]  # backup/push: stays local


def _kept_by_change(last: frozenset[str], now: frozenset[str]) -> bool:
    """Flags changed on the side that still holds a message the other side deleted, and
    not by marking it deleted (T): modification beats deletion."""
    return now != last and "T" not in now - last


def _plan_flags(p: Pair, r: RemoteMsg, lm: LocalMsg, policy: Policy) -> list[Action]:
    """Both sides hold the message: merge flag changes per the mode, upgrade a stub."""
    remote_add, remote_del = r.flags - p.flags, p.flags - r.flags
    local_add, local_del = lm.flags - p.flags, p.flags - lm.flags
    if policy.mode == "sync":               # per-flag merge; changes on both sides can't clash
        want_remote = want_local = final = (p.flags | remote_add | local_add) - remote_del - local_del
    elif policy.mode == "push":             # local changes reach the server, not the reverse
        want_remote, want_local = (r.flags | local_add) - local_del, lm.flags
        final = lm.flags
    else:                                   # pull/backup: server changes reach the Maildir
        want_remote, want_local = r.flags, (lm.flags | remote_add) - remote_del
        final = r.flags
    placeholder = p.placeholder or lm.placeholder
    # Opened in the mail client (S newly set locally, not also on the server: that is a
    # flag carried over, or read elsewhere) or flagged: the user wants it.
    upgrade = placeholder and (policy.full or "F" in want_local
                               or "S" in local_add - remote_add)
    after = placeholder and not upgrade
    steps = []
    if upgrade:
        steps.append(lambda pair: UpgradePlaceholder(r.uid, lm.key, want_local, pair))
    if want_remote != r.flags:
        steps.append(lambda pair: SetRemoteFlags(r.uid, want_remote - r.flags,
                                                 r.flags - want_remote, pair))
    if want_local != lm.flags and not upgrade:
        steps.append(lambda pair: SetLocalFlags(lm.key, want_local, pair))
    final_pair = Pair(r.uid, lm.key, final, after)
    if not steps:
        return [] if final_pair == p else [Record(final_pair)]
    # Until the last step ran, the old last-synced flags stay recorded: re-planning from any
    # prefix then computes the same wanted flags.
    between = Pair(r.uid, lm.key, p.flags, after)
    return [make(between) for make in steps[:-1]] + [steps[-1](final_pair)]


def _headers_only(r: RemoteMsg, policy: Policy) -> bool:
    # A message already flagged is wanted in full (it would be upgraded right away).
    return (0 < policy.max_size < r.size) and not policy.full and "F" not in r.flags


def _plan_new_remote(r: RemoteMsg, policy: Policy) -> list[Action]:
    if policy.mode == "push" or _outside(r, policy):   # not applied locally / not wanted
        return []
    return [Download(r.uid, r.flags, _headers_only(r, policy))]


def _plan_new_local(lm: LocalMsg, policy: Policy) -> list[Action]:
    if policy.mode not in CHANGE_SERVER or lm.placeholder:   # a stub is never uploaded
        return []
    return [Upload(lm.key, lm.flags)]


def _mass_delete_guard(actions: list[Action], remote: Mapping, local: Mapping,
                       pairs: list[Pair], policy: Policy) -> str | None:
    if policy.allow_mass_delete:
        return None
    reasons = []
    sides = (("server", remote, sum(p.uid is not None for p in pairs),
              sum(isinstance(a, ExpungeRemote) for a in actions)),
             ("local", local, sum(p.key is not None for p in pairs),
              sum(isinstance(a, DeleteLocal) and not a.window for a in actions)))
    for side, present, known, deleting in sides:
        if not present and known >= 2:
            reasons.append(f"the {side} folder is empty but held {known} messages "
                           f"at the last sync")
        elif deleting >= 3 and deleting > policy.max_delete * known:
            reasons.append(f"would delete {deleting} of {known} messages on the {side} side "
                           f"(max_delete {policy.max_delete:g})")
    if not reasons:
        return None
    return "refused: " + "; ".join(reasons) + "; " + MASS_DELETE_HINT
