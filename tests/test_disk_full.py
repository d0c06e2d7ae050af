"""Full disk and read-only folders: the maildir on a tiny tmpfs (mounted here when the
tests run as root, as CI does) fills mid-run: exit 74 in one line, nothing deleted on the
server that is not stored, no half-written message in the Maildir, and the next run
after freeing space converges. A read-only maildir or state folder: exit 74 naming it."""

from __future__ import annotations

import os
from collections import Counter
import subprocess
from pathlib import Path

import pytest

from tests.corpus import make_corpus
from tests.dovecot import _in_ci
from tests.test_links import assert_settles, seed_server

NO_SPACE = ("No space left", "disk is full")   # the Maildir's, or SQLite's words


@pytest.fixture
def tiny_fs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size; resize(path, size), read_only(path, ro).
    Everything mounted is unmounted (by path) afterwards."""
    mounted: list[Path] = []

    def unavailable(why: str) -> None:
        if _in_ci():
            pytest.fail(f"cannot mount a tmpfs under CI: {why}", pytrace=False)
        pytest.skip(why)

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            unavailable("mounting a size-limited tmpfs needs root")
        path = tmp_path / f"tiny{len(mounted)}"
        path.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                               "tmpfs", str(path)], capture_output=True)
        if done.returncode != 0:
            unavailable(f"mount -t tmpfs failed: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    def remount(path: Path, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True,
                       capture_output=True)

    mount.resize = lambda path, size: remount(path, f"size={size}")
    mount.read_only = lambda path, ro=True: remount(path, "ro" if ro else "rw")
    yield mount
    for path in reversed(mounted):
        done = subprocess.run(["umount", str(path)], capture_output=True)
        if done.returncode != 0:   # still busy (a process of a failed test): detach it
            subprocess.run(["umount", "-l", str(path)], check=True)


def assert_disk_full(result) -> None:
    assert result.code == 74, (result.code, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and any(w in lines[0] for w in NO_SPACE), result.err


def maildir_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")]


def assert_only_whole_messages(root: Path, corpus: list[bytes]) -> None:
    """Every published file is one complete message of the corpus, none twice."""
    stored = [p.read_bytes() for p in maildir_files(root)]
    assert set(stored) <= set(corpus), "a truncated or foreign file was published"
    assert len(stored) == len(set(stored)), "a message was stored twice"


def tmp_debris(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.parent.name == "tmp"]


def imap_on(imap_account, **keys):
    """An IMAP account whose maildir or state_dir is elsewhere (the fixture's paths and
    local client follow the config)."""
    from tests.imaphelp import Local
    s = imap_account(**keys)
    if "maildir" in keys:
        s.acct.maildir = Path(keys["maildir"])
        s.local = Local(s.acct.maildir)
    if "state_dir" in keys:
        s.acct.state_dir = Path(keys["state_dir"])
    return s


def pop3_on(make_account, **keys):
    acct = make_account(**keys)
    acct.maildir = Path(keys.get("maildir", acct.maildir))
    acct.state_dir = Path(keys.get("state_dir", acct.state_dir))
    return acct


# POP3 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("state_too", [False, True], ids=["maildir", "maildir+state"])
def test_pop3_disk_full_mid_fetch_deletes_nothing_unstored(make_account, tiny_fs, state_too):
    if state_too:
        # State and mail share a 4 MB disk, 2.6 MB of it taken by an unrelated file.
        corpus, fs = make_corpus(200), tiny_fs("4m")
        ballast = fs / "ballast.bin"
        ballast.write_bytes(os.urandom(2_600_000))
        state = {"state_dir": str(fs / "state")}
    else:
        corpus, fs, state = make_corpus(250), tiny_fs("2m"), {}   # ~3.3 MB > 2 MB
    acct = pop3_on(make_account, maildir=str(fs / "Mail"), **state)
    acct.server.seed(acct.user, corpus)
    result = acct.run("fetch")
    assert_disk_full(result)
    stored = acct.local_messages()
    assert len(stored) < len(corpus)
    assert_only_whole_messages(acct.maildir, corpus)
    # Nothing deleted on the server that is not stored.
    assert not Counter(corpus) - Counter(stored + acct.server_messages())
    if state_too:
        ballast.unlink()
    else:
        tiny_fs.resize(fs, "32m")
    again = acct.run("fetch")
    assert again.code == 0, again.err
    assert sorted(acct.local_messages()) == sorted(corpus)
    assert acct.server_messages() == []
    assert tmp_debris(acct.maildir) == []


# IMAP --------------------------------------------------------------------------------------

def test_imap_disk_full_on_first_sync_then_converges(imap_account, tiny_fs):
    fs = tiny_fs("2m")
    # One connection: the folders in turn, so the disk fills in the second one and the
    # first one's whole messages are there to check (two connections fill it in both).
    s = imap_on(imap_account, maildir=str(fs / "Mail"), connections=1)
    seed = {"INBOX": (make_corpus(200), ""), "Work": (make_corpus(60, seed=2), "S")}
    expected = seed_server(s, seed)
    everything = [m for bodies in expected.values() for m in bodies]
    assert_disk_full(s.sync())
    # The server is exactly as it was; locally only whole messages, none twice.
    for folder, bodies in expected.items():
        assert sorted(s.acct.server_messages(folder)) == sorted(bodies), folder
    assert_only_whole_messages(s.acct.maildir, everything)
    assert maildir_files(s.acct.maildir)
    tiny_fs.resize(fs, "32m")
    assert_settles(s, expected)
    assert tmp_debris(s.acct.maildir) == []


def test_imap_disk_full_mid_incremental_sync_with_local_changes(imap_account, tiny_fs,
                                                              tmp_path):
    fs = tiny_fs("4m")
    s = imap_on(imap_account, maildir=str(fs / "Mail"))
    inbox = make_corpus(20)
    expected = seed_server(s, {"INBOX": (inbox, "")})
    assert s.sync().code == 0
    ballast = fs / "ballast.bin"             # an unrelated big file, deleted to free space
    ballast.write_bytes(os.urandom(2_500_000))
    # Changes on both sides; the new server mail does not fit any more.
    arriving = make_corpus(150, seed=5)
    s.acct.server.seed(s.acct.user, arriving)
    s.local.delete("INBOX", inbox[3])
    s.local.set_flags("INBOX", inbox[4], "FS")
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", inbox[5]), add="R")
    assert_disk_full(s.sync())
    on_server = s.acct.server_messages()
    # Nothing is gone from the server but the message deleted locally.
    assert set(inbox + arriving) - {inbox[3]} <= set(on_server)
    assert_only_whole_messages(s.acct.maildir, inbox + arriving)
    local = s.local.bodies()
    assert inbox[3] not in local and set(inbox) - {inbox[3]} <= set(local)
    ballast.unlink()
    expected["INBOX"] = [m for m in inbox if m != inbox[3]] + arriving
    assert_settles(s, expected)
    for side in (s.local, s.remote):
        flags = side.flags_by_body()
        assert flags[inbox[4]] == "FS" and flags[inbox[5]] == "R"


def test_imap_maildir_turning_read_only_exits_74_naming_it(imap_account, tiny_fs):
    fs = tiny_fs("8m")
    s = imap_on(imap_account, maildir=str(fs / "Mail"))
    inbox = make_corpus(10)
    expected = seed_server(s, {"INBOX": (inbox, "")})
    assert s.sync().code == 0
    tiny_fs.read_only(fs)
    s.remote.append("INBOX", make_corpus(12)[11], "")
    s.remote.set_flags("INBOX", s.remote.uid_of("INBOX", inbox[1]), add="S")
    result = s.sync()
    assert result.code == 74, result.err
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and str(s.acct.maildir) in lines[0], result.err
    assert sorted(s.remote.bodies()) == sorted(inbox + [make_corpus(12)[11]])
    tiny_fs.read_only(fs, False)
    expected["INBOX"] = inbox + [make_corpus(12)[11]]
    assert_settles(s, expected)
    assert s.local.flags_by_body()[inbox[1]] == "S"


def test_imap_read_only_maildir_exits_74_naming_it(imap_account, read_only_dir):
    s = imap_on(imap_account, maildir=str(read_only_dir / "Mail"))
    seed_server(s, {"INBOX": (make_corpus(3), ""), "Work": (make_corpus(2, seed=2), "S")})
    result = s.sync()
    assert result.code == 74, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and str(read_only_dir / "Mail") in lines[0], result.err
    assert len(s.remote.bodies()) == 3 and len(s.remote.bodies("Work")) == 2


def test_imap_read_only_state_folder_exits_74_naming_it(imap_account, read_only_dir):
    s = imap_on(imap_account, state_dir=str(read_only_dir / "state"))
    seed_server(s, {"INBOX": (make_corpus(3), "")})
    result = s.sync()
    assert result.code == 74, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and str(read_only_dir / "state") in lines[0], result.err
    assert len(s.remote.bodies()) == 3
    assert not s.acct.maildir.exists() or not maildir_files(s.acct.maildir)


def test_imap_state_folder_turning_read_only_exits_74_naming_it(imap_account, tiny_fs):
    fs = tiny_fs("8m")
    s = imap_on(imap_account, state_dir=str(fs / "state"))
    inbox = make_corpus(6)
    expected = seed_server(s, {"INBOX": (inbox, "")})
    assert s.sync().code == 0
    tiny_fs.read_only(fs)
    s.remote.append("INBOX", make_corpus(7)[6], "")
    s.local.delete("INBOX", inbox[0])
    result = s.sync()
    assert result.code == 74, result.err
    assert "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and str(s.acct.state_dir) in lines[0], result.err
    # Nothing the state could not record was done on the server.
    assert sorted(s.remote.bodies()) == sorted(inbox + [make_corpus(7)[6]])
    tiny_fs.read_only(fs, False)
    expected["INBOX"] = inbox[1:] + [make_corpus(7)[6]]
    assert_settles(s, expected)
