"""IMAP sync killed (SIGKILL) at every durable step, then run again, against the real Dovecot.

The promise: whatever step a sync dies at, the next run converges to what one clean sync
gives. Every folder agrees on both sides (same bodies, same flags), no message that should
exist is missing, none is there twice (on either side, uploads included: a message
APPENDed just before the kill is found again by its Message-ID, not sent twice), no
temporary file or journal entry is left behind, and one more sync has nothing to do.

Each run is a subprocess of `python -m mailsync` (MAILSYNC_CRASH_AT=N sends SIGKILL at
the N-th step, MAILSYNC_CRASH_COUNT=PATH lists the steps of a clean run).
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailsync import folders as mfolders
from tests.corpus import make_corpus, make_message

CORPUS = make_corpus(30)
LOCAL_INBOX = [make_message(700 + i) for i in range(3)]
LOCAL_NOTES = [make_message(710 + i) for i in range(3)]
NEW_REMOTE = [make_message(720 + i) for i in range(2)]
NEW_LOCAL = [make_message(730 + i) for i in range(2)]
ZERO = ("downloaded", "uploaded", "flags_changed", "deleted_local", "deleted_remote",
        "bytes_downloaded")


# The world: folder -> {body: flag letters}, what both sides must hold after a full sync --
def seed_initial(s) -> dict[str, dict[bytes, str]]:
    """30 server messages in three folders (some flagged) and local mail to upload: new
    files in INBOX and a local-only folder Notes."""
    server, user = s.acct.server, s.acct.user
    c = CORPUS
    server.seed(user, c[:12])
    server.seed(user, c[12:16], flags="S")
    server.seed(user, c[16:24], folder="Work", flags="FS")
    server.seed(user, c[24:30], folder="Lists")
    local_flags = ["", "S", "RS"]
    for body, flags in zip(LOCAL_INBOX, local_flags):
        s.local.deliver("INBOX", body, flags)
    s.local.make_folder("Notes")
    for body, flags in zip(LOCAL_NOTES, ["", "F", "DS"]):
        s.local.deliver("Notes", body, flags)
    world = {
        "INBOX": {**{b: "" for b in c[:12]}, **{b: "S" for b in c[12:16]},
                  **dict(zip(LOCAL_INBOX, local_flags))},
        "Work": {b: "FS" for b in c[16:24]},
        "Lists": {b: "" for b in c[24:30]},
        "Notes": dict(zip(LOCAL_NOTES, ["", "F", "DS"])),
    }
    return world


def change_both_sides(s, world: dict[str, dict[bytes, str]]) -> None:
    """After a clean sync: new mail, flag changes, deletions on both sides, two local moves
    between folders, a flag merge and two modification-beats-deletion conflicts."""
    c, r, loc = CORPUS, s.remote, s.local
    uid = lambda folder, body: r.uid_of(folder, body)   # noqa: E731
    # Server side (a phone, webmail).
    r.append("INBOX", NEW_REMOTE[0], "")
    r.append("Work", NEW_REMOTE[1], "F")
    world["INBOX"][NEW_REMOTE[0]] = ""
    world["Work"][NEW_REMOTE[1]] = "F"
    r.set_flags("INBOX", uid("INBOX", c[0]), add="F")
    world["INBOX"][c[0]] = "F"
    r.set_flags("INBOX", uid("INBOX", c[12]), remove="S")
    world["INBOX"][c[12]] = ""
    r.expunge("INBOX", uid("INBOX", c[1]))
    del world["INBOX"][c[1]]
    r.expunge("Lists", uid("Lists", c[24]))
    del world["Lists"][c[24]]
    # Local side (mutt).
    loc.deliver("INBOX", NEW_LOCAL[0], "S")
    loc.deliver("Notes", NEW_LOCAL[1], "")
    world["INBOX"][NEW_LOCAL[0]] = "S"
    world["Notes"][NEW_LOCAL[1]] = ""
    loc.set_flags("Work", c[16], "S")
    world["Work"][c[16]] = "S"
    loc.set_flags("INBOX", c[3], "RS")
    world["INBOX"][c[3]] = "RS"
    loc.delete("INBOX", c[4])
    del world["INBOX"][c[4]]
    loc.delete("Work", c[17])
    del world["Work"][c[17]]
    loc.move("INBOX", c[5], "Lists")
    world["Lists"][c[5]] = world["INBOX"].pop(c[5])
    loc.move("Notes", LOCAL_NOTES[1], "Work")
    world["Work"][LOCAL_NOTES[1]] = world["Notes"].pop(LOCAL_NOTES[1])
    # Both sides change one message: the flags merge.
    r.set_flags("INBOX", uid("INBOX", c[2]), add="F")
    loc.set_flags("INBOX", c[2], "R")
    world["INBOX"][c[2]] = "FR"
    # Changed on one side, deleted on the other: kept (modification beats deletion).
    r.expunge("INBOX", uid("INBOX", c[6]))
    loc.set_flags("INBOX", c[6], "F")
    world["INBOX"][c[6]] = "F"
    loc.delete("INBOX", c[7])
    r.set_flags("INBOX", uid("INBOX", c[7]), add="S")
    world["INBOX"][c[7]] = "S"


# Checks ---------------------------------------------------------------------------------
def assert_converged(s, world: dict[str, dict[bytes, str]], label: str) -> None:
    for folder, want in world.items():
        expected = sorted(want)
        local, remote = s.local.bodies(folder), s.remote.bodies(folder)
        assert local == expected, f"{label}: {folder}: local lost or duplicated mail " \
                                  f"({_diff(local, expected)})"
        assert remote == expected, f"{label}: {folder}: server lost or duplicated mail " \
                                   f"({_diff(remote, expected)})"
        assert s.local.flags_by_body(folder) == want, f"{label}: {folder}: local flags"
        assert s.remote.flags_by_body(folder) == want, f"{label}: {folder}: server flags"
        leftovers = list((s.local.path(folder) / "tmp").iterdir())
        assert leftovers == [], f"{label}: {folder}: files left in tmp/: {leftovers}"
    assert sorted(s.remote.folders()) == sorted(world), f"{label}: server folders"
    local_folders = sorted("/".join(p) or "INBOX"
                           for p in mfolders.local_folders(s.acct.maildir, "maildir++"))
    assert local_folders == sorted(world), f"{label}: local folders"
    db = sqlite3.connect(s.acct.state_dir / "state.sqlite3")
    try:
        left = db.execute("SELECT kind, folder, uid, key FROM intents").fetchall()
    finally:
        db.close()
    assert left == [], f"{label}: journal entries left unsettled: {left}"
    again = s.sync()
    assert again.code == 0, f"{label}: {again.err}"
    summary = again.json["accounts"][0]
    assert {k: summary[k] for k in ZERO} == dict.fromkeys(ZERO, 0), \
        f"{label}: a further sync still had work: {summary}"


def _diff(got: list[bytes], want: list[bytes]) -> str:
    g, w = Counter(got), Counter(want)
    missing = [_name(b) for b in (w - g).elements()]
    extra = [_name(b) for b in (g - w).elements()]
    return f"missing {missing}, extra {extra}"


def _name(body: bytes) -> str:
    for line in body.split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return repr(body[:40])


def steps_of(s, tmp_path, name: str) -> list[str]:
    log = tmp_path / f"{name}.steps"
    result = s.sync(env={"MAILSYNC_CRASH_COUNT": str(log)})
    assert result.code == 0, result.err
    return log.read_text().split()


def crash_points(steps: list[str], every_nth_download: int = 3) -> list[int]:
    """The steps to kill at (1-based): every step except that, inside a run of "downloaded"
    steps (one per message of a batch, all alike), only the first, the last and every n-th
    one are taken."""
    points = []
    for i, name in enumerate(steps):
        inner = (name == "downloaded" and 0 < i < len(steps) - 1
                 and steps[i - 1] == steps[i + 1] == "downloaded")
        run_index = 0
        while inner and steps[i - 1 - run_index] == "downloaded":
            run_index += 1
        if not inner or run_index % every_nth_download == 0:
            points.append(i + 1)
    return points


def killed_sync(s, point: int) -> None:
    proc = s.acct.popen("--no-progress", "sync", env={"MAILSYNC_CRASH_AT": str(point)})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, f"step {point}: not killed ({proc.returncode}): " \
                                  f"{err.decode()}"


def at_each(points: list[int], trial) -> None:
    """trial(point) for every point, a few at a time (each on its own server user and
    Maildir; the runs are subprocesses, so threads overlap them). The first failure is
    raised."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in pool.map(trial, points):
            pass


def rerun_converges(s, world: dict[str, dict[bytes, str]], label: str) -> None:
    """The run after a killed one completes and leaves what one clean sync gives."""
    rerun(s, label)
    assert_converged(s, world, label)
    s.remote.close()


def rerun(s, label: str) -> dict:
    result = s.sync()
    assert result.code == 0, f"{label}: the rerun failed: {result.err}"
    return result.json["accounts"][0]


# Tests ----------------------------------------------------------------------------------
def test_initial_sync_killed_anywhere_then_rerun_converges(imap_account, tmp_path):
    probe = imap_account()
    world = seed_initial(probe)
    steps = steps_of(probe, tmp_path, "initial")
    assert_converged(probe, world, "clean initial sync")
    probe.remote.close()
    kinds = Counter(steps)
    assert kinds["downloaded"] == 30 and kinds["uploaded"] == 6, kinds
    points = crash_points(steps)

    def trial(point: int) -> None:
        s = imap_account()
        world = seed_initial(s)
        killed_sync(s, point)
        label = f"initial sync killed at step {point} ({steps[point - 1]})"
        rerun_converges(s, world, label)

    at_each(points, trial)
    print(f"initial sync: {len(steps)} steps, killed at {len(points)} of them")
    assert len(points) >= 30


def test_incremental_sync_killed_at_every_step_then_rerun_converges(imap_account, tmp_path):
    probe = imap_account()
    world = seed_initial(probe)
    assert probe.sync().code == 0
    change_both_sides(probe, world)
    steps = steps_of(probe, tmp_path, "incremental")
    assert_converged(probe, world, "clean incremental sync")
    probe.remote.close()
    kinds = Counter(steps)
    for kind in ("downloaded", "uploaded", "remote-flags", "local-flags", "expunged",
                 "deleted-local"):
        assert kinds[kind], f"the incremental sync has no {kind} step: {kinds}"
    points = crash_points(steps, every_nth_download=1)     # every step

    def trial(point: int) -> None:
        s = imap_account()
        world = seed_initial(s)
        assert s.sync().code == 0
        change_both_sides(s, world)
        killed_sync(s, point)
        label = f"incremental sync killed at step {point} ({steps[point - 1]})"
        rerun_converges(s, world, label)

    at_each(points, trial)
    print(f"incremental sync: {len(steps)} steps, killed at {len(points)} of them")
    assert len(points) == len(steps) >= 25


@pytest.mark.parametrize("run", ["initial", "incremental"])
def test_sync_killed_at_any_moment_then_rerun_converges(imap_account, tmp_path, run):
    """SIGKILL at moments spread over a run's work rather than at its steps: inside a
    command, between the two commands of an expunge, while another folder's thread is
    half way through a batch. The rerun converges all the same."""
    def prepared():
        s = imap_account()
        world = seed_initial(s)
        if run == "incremental":
            assert s.sync().code == 0
            change_both_sides(s, world)
        return s, world

    probe, world = prepared()
    first_step, ended = timed_run(probe, tmp_path / "probe.steps")
    assert ended is not None, f"the clean {run} sync did not end"
    assert_converged(probe, world, f"clean {run} sync")
    probe.remote.close()
    work = ended - first_step
    moments = [work * k / 20 for k in range(20)]
    killed = []

    def trial(moment: float) -> None:
        s, world = prepared()
        _, ended = timed_run(s, tmp_path / f"{moment}.steps", kill_after=moment)
        killed.append(ended is None)
        label = f"{run} sync killed {moment * 1000:.1f} ms after its first step"
        rerun_converges(s, world, label)

    at_each(moments, trial)
    print(f"{run}: work {work * 1000:.1f} ms: killed {sum(killed)} of {len(killed)} runs")
    assert sum(killed) >= len(moments) // 4, "most runs ended before the kill"


def timed_run(s, steps: Path, kill_after: float | None = None) -> tuple[float, float | None]:
    """A sync whose first durable step is awaited (the step log appears), then killed
    kill_after seconds later or left to end. (first step, end) in monotonic seconds;
    end is None when the kill came first."""
    proc = s.acct.popen("--no-progress", "sync", env={"MAILSYNC_CRASH_COUNT": str(steps)})
    while not steps.exists() and proc.poll() is None:
        time.sleep(0.0005)
    first = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)
        proc.kill()
    proc.communicate(timeout=120)
    if proc.returncode == -9:
        return first, None
    assert proc.returncode == 0, f"the sync failed ({proc.returncode})"
    return first, time.monotonic()


@pytest.mark.parametrize("which", [1, 4])
def test_killed_right_after_an_append_the_rerun_finds_it_and_does_not_upload_again(
        imap_account, tmp_path, which):
    """SIGKILL after the server took an APPEND but before the run recorded its UID: the
    rerun finds the message by its Message-ID and pairs it; it is on the server once.
    One connection: with two, the folders' steps interleave differently in each run, and
    the probe's step number for the n-th upload may be another step in the killed run."""
    probe = imap_account(connections=1)
    world = seed_initial(probe)
    steps = steps_of(probe, tmp_path, "append")
    probe.remote.close()
    uploads = [i + 1 for i, name in enumerate(steps) if name == "uploaded"]
    point = uploads[which - 1]
    s = imap_account(connections=1)
    world = seed_initial(s)
    killed_sync(s, point)
    # The journalled upload reached the server once and is not recorded yet.
    on_server = Counter(b for f in s.remote.folders() for b in s.remote.bodies(f))
    local_only = LOCAL_INBOX + LOCAL_NOTES
    sent = [b for b in local_only if on_server[b]]
    assert len(sent) == which and all(on_server[b] == 1 for b in sent)
    db = sqlite3.connect(s.acct.state_dir / "state.sqlite3")
    pending = db.execute("SELECT kind, token FROM intents").fetchall()
    db.close()
    assert [k for k, _ in pending] == ["upload"] and pending[0][1].startswith("<")
    summary = rerun(s, f"killed after upload {which}")
    assert summary["uploaded"] == len(local_only) - which, summary
    assert_converged(s, world, f"killed after upload {which}")


@pytest.mark.parametrize("side", ["local", "server"])
def test_a_flag_change_killed_before_its_record_then_undone_stays_undone(imap_account, side):
    """The user flags a message on one side; the sync copying that flag to the other side
    is killed after the copy but before recording it; the user unflags it again. The next
    sync must not take the copied flag for a change made on the other side and bring it
    back: the user's last word (unflagged) wins on both sides."""
    s = imap_account()
    body = CORPUS[0]
    s.acct.server.seed(s.acct.user, CORPUS[:3])
    assert s.sync().code == 0
    if side == "local":
        s.local.set_flags("INBOX", body, "F")
    else:
        s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", body), add="F")
    killed_sync(s, 1)              # the only work is that flag: step 1 is right after it
    other = s.remote if side == "local" else s.local
    assert other.flags_by_body()[body] == "F", "the kill came before the copy"
    if side == "local":
        s.local.set_flags("INBOX", body, "")
    else:
        s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", body), remove="F")
    assert rerun(s, "after the undo")["flags_changed"] == 1
    world = {"INBOX": dict.fromkeys(CORPUS[:3], "")}
    assert_converged(s, world, f"flagged on the {side} side, killed, unflagged")


def test_killed_between_marking_deleted_and_expunging_the_rerun_expunges(imap_account,
                                                                            tmp_path):
    """The user deletes a message locally; the sync dies after STORE +FLAGS \\Deleted and
    before UID EXPUNGE. The server's new \\Deleted flag is not a change that saves the
    message (modification beats deletion): the rerun expunges it, and never brings it
    back to the Maildir."""
    s = imap_account()
    s.acct.server.seed(s.acct.user, CORPUS[:3])
    assert s.sync().code == 0
    deleted = CORPUS[1]
    s.local.delete("INBOX", deleted)
    steps = steps_of(s, tmp_path, "probe")   # a clean run learns the steps; a twin is killed
    assert "marked-deleted" in steps, steps
    s.remote.close()

    s = imap_account()
    s.acct.server.seed(s.acct.user, CORPUS[:3])
    assert s.sync().code == 0
    s.local.delete("INBOX", deleted)
    killed_sync(s, steps.index("marked-deleted") + 1)
    assert s.remote.flags_by_body()[deleted] == "T", "the kill came before the mark"
    summary = rerun(s, "killed between the mark and the expunge")
    assert summary["downloaded"] == 0 and summary["deleted_remote"] == 1, summary
    world = {"INBOX": {CORPUS[0]: "", CORPUS[2]: ""}}
    assert_converged(s, world, "killed between the mark and the expunge")


def test_an_upload_without_message_id_killed_before_its_record_is_found_by_its_header(
        imap_account, tmp_path):
    """A local message without a Message-ID is uploaded; the run dies before recording
    the new UID; before the next run another client appends a different message of the
    same size. The rerun must pair the upload with its own copy (size and header), not
    the newest message of that size: else its copy is downloaded again and the other
    message is never."""
    s = imap_account()
    s.acct.server.seed(s.acct.user, CORPUS[:2])
    assert s.sync().code == 0
    mine = b"From: a@example.org\nTo: b@example.org\nSubject: note A\n\nno id here\n"
    other = mine.replace(b"note A", b"note B")
    assert len(mine) == len(other)
    s.local.deliver("INBOX", mine, "S")
    killed_sync(s, 2)              # upload-journalled, uploaded: killed after the APPEND
    assert s.remote.bodies().count(mine) == 1
    s.remote.append("INBOX", other, "")
    summary = rerun(s, "killed after an upload without Message-ID")
    assert summary["uploaded"] == 0 and summary["downloaded"] == 1, summary
    world = {"INBOX": {CORPUS[0]: "", CORPUS[1]: "", mine: "S", other: ""}}
    assert_converged(s, world, "killed after an upload without Message-ID")
