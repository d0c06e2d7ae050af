"""Maildir delivery: durable before it is visible, errors named."""

from __future__ import annotations

import ctypes
import errno
import mailbox

import pytest

from mailsync.drivers import maildir as md
from mailsync.errors import LocalIOError


def test_a_batch_is_made_durable_before_any_file_is_renamed_into_place(tmp_path, monkeypatch):
    box = md.Maildir(tmp_path / "Mail")
    box.create()
    events = []
    monkeypatch.setattr(md, "_syncfs", lambda fd: events.append("syncfs") or 0)
    real_rename = md.os.rename
    monkeypatch.setattr(md.os, "rename",
                        lambda a, b: (events.append("rename"), real_rename(a, b))[1])
    names = []
    for i in range(3):
        name = md.unique_name()
        f = box.open_tmp(name)
        f.write(b"Subject: %d\n\nbody\n" % i)
        f.close(durable=False)
        names.append(name)
    box.make_durable()
    box.publish(names)
    assert events == ["syncfs", "rename", "rename", "rename"]
    assert len(mailbox.Maildir(tmp_path / "Mail", create=False)) == 3


class Killed(BaseException):
    pass


@pytest.mark.parametrize("killed_at", [1, 2, None])
def test_upgrading_a_message_never_leaves_two_files_for_its_key(tmp_path, monkeypatch,
                                                                killed_at):
    """A placeholder upgraded to the whole message, then given new flags: killed after
    any file operation, the folder holds one file for the key, never the note and the
    message side by side."""
    box = md.Maildir(tmp_path / "Mail")
    box.create()
    f = box.open_tmp("note")
    f.write(b"Subject: big\n\n[placeholder]\n")
    f.close()
    entry = box.publish_as("note", "k1", "S")
    f = box.open_tmp("whole")
    f.write(b"Subject: big\n\nthe whole message\n")
    f.close()
    calls = []

    def dying(real):
        def op(*args):
            calls.append(args)
            if len(calls) == killed_at:
                raise Killed()
            return real(*args)
        return op

    monkeypatch.setattr(md.os, "rename", dying(md.os.rename))
    monkeypatch.setattr(md.os, "unlink", dying(md.os.unlink))
    try:
        box.set_flags(box.replace(entry, "whole"), "FS", "DFPRST")
    except Killed:
        assert killed_at is not None
    monkeypatch.undo()
    files = [p for sub in ("new", "cur") for p in (tmp_path / "Mail" / sub).iterdir()]
    assert len(files) == 1 and files[0].name.startswith("k1:2,"), files
    if killed_at is None:
        assert files[0].name == "k1:2,FS"
        assert files[0].read_bytes().endswith(b"the whole message\n")


def test_a_failed_syncfs_is_a_local_io_error(tmp_path, monkeypatch):
    box = md.Maildir(tmp_path / "Mail")
    box.create()

    def failing(fd):
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(md, "_syncfs", failing)
    with pytest.raises(LocalIOError, match="Input/output error"):
        box.make_durable()


def test_without_syncfs_each_file_is_fsynced_on_close(tmp_path, monkeypatch):
    box = md.Maildir(tmp_path / "Mail")
    box.create()
    monkeypatch.setattr(md, "_syncfs", None)
    synced = []
    real_fsync = md.os.fsync
    monkeypatch.setattr(md.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    f = box.open_tmp(md.unique_name())
    f.write(b"x\n")
    f.close(durable=False)
    assert synced


def _deliver(box: md.Maildir, body: bytes, flags: str = "") -> md.Entry:
    name = md.unique_name()
    f = box.open_tmp(name)
    f.write(body)
    f.close(durable=True)
    return box.publish_as(name, name, flags)


def test_a_folder_changed_this_instant_has_no_stamp_yet(tmp_path):
    box = md.Maildir(tmp_path / "Mail")
    box.create()
    _deliver(box, b"Subject: a\n\nx\n")
    assert box.stamp() is None      # a change in the same clock tick would not show


def test_any_change_after_a_stamp_is_given_changes_the_stamp(tmp_path):
    # The promise the skip of unchanged folders rests on, at the edge of the clock tick:
    # change the folder the moment stamp() first answers, many times over.
    box = md.Maildir(tmp_path / "Mail")
    box.create()
    entry = _deliver(box, b"Subject: a\n\nx\n")
    for i in range(20):
        while (before := box.stamp()) is None:
            pass
        entry = box.set_flags(entry, "S" if i % 2 == 0 else "", "DFPRST")
        while (after := box.stamp()) is None:
            pass
        assert after != before, i


def test_relpaths_lists_what_scan_finds(tmp_path):
    box = md.Maildir(tmp_path / "Mail")
    box.create()
    _deliver(box, b"Subject: a\n\nx\n")
    _deliver(box, b"Subject: b\n\nx\n", "S")
    (box.path / "cur" / ".hidden").write_bytes(b"")
    assert box.relpaths() == {e.relpath for e in box.scan().values()}
    assert len(box.relpaths()) == 2
