"""Gmail (X-GM-EXT-1): a message in several labels is downloaded once (issue 16).

Gmail shows each label as a folder and `[Gmail]/All Mail` holds every message; a message
has one X-GM-MSGID in all of them. The in-memory server (tests/memory_remote.py) with
Gmail's labels stands in for Gmail; the sync runs
in-process through engine.run_account.
"""

from __future__ import annotations

from collections import Counter

from mailsync.drivers import imap
from tests.corpus import make_message
from tests.memory_remote import MemoryServer, MemorySession
from tests.test_sync_names import fake  # noqa: F401 (fixture)

ALL_MAIL = "[Gmail]/All Mail"
LABELS = {"Work": range(0, 400), "Family": range(300, 700), "Receipts": range(650, 1000)}


class GmailServer(MemoryServer):
    """Gmail: labels as folders, one X-GM-MSGID per message in all of them; counts how
    often each message is downloaded."""

    def __init__(self, delimiter: str | None) -> None:
        super().__init__(delimiter, gmail=True, move=False)
        self.fetched: Counter[bytes] = Counter()   # body -> times downloaded


class GmailSession(MemorySession):
    def fetch_bodies(self, uids, sink_for, done, headers_only=False, sizes=None):
        got = super().fetch_bodies(uids, sink_for, done, headers_only, sizes)
        for uid in got:
            self.server.fetched[self.selected.messages[uid][0]] += 1
        return got


def gmail(fake, monkeypatch, session=None):
    """An account over GmailServer, through session (GmailSession by default)."""
    s = fake("maildir++", "/")
    server = GmailServer("/")
    s.server = server
    monkeypatch.setattr(imap, "connect", lambda account, secret, trace=None, **kw:
                        (session or GmailSession)(server))
    return s


def test_a_message_in_several_labels_is_downloaded_once(fake, monkeypatch):
    s = gmail(fake, monkeypatch)
    bodies = [make_message(i, size=200) for i in range(1000)]
    s.server.folder("INBOX")
    everything = s.server.folder(ALL_MAIL)
    for body in bodies:
        everything.add(body)
    for label, members in LABELS.items():
        folder = s.server.folder(label)
        for i in members:
            folder.add(bodies[i], "S" if i % 2 else "")

    result = s.sync()
    assert result.ok, result.error
    assert sorted(s.server.fetched) == sorted(bodies)          # every message ...
    assert set(s.server.fetched.values()) == {1}                # ... downloaded once
    memberships = 1000 + sum(len(m) for m in LABELS.values())
    assert (result.downloaded, result.copied) == (1000, memberships - 1000)
    assert s.local_bodies(ALL_MAIL) == sorted(bodies)
    for label, members in LABELS.items():                      # every label complete
        assert s.local_bodies(label) == sorted(bodies[i] for i in members), label

    again = s.sync()
    assert again.ok, again.error
    assert (again.downloaded, again.copied, again.uploaded) == (0, 0, 0)
    assert not [entry for entry in s.server.log if entry[0] == "append"]
    assert set(s.server.fetched.values()) == {1}


class DroppingGmailSession(GmailSession):
    """Gmail's APPEND of a message it already holds (under any label): OK with a new UID,
    and nothing stored."""

    def append(self, folder, message, letters=frozenset(), when=None):
        held = {body for f in self.server.folders.values() for body, _ in f.messages.values()}
        if message in held:
            self.server.log.append(("dropped", folder, message))
            target = self.server.folders[folder]
            target.uidnext += 1
            return target.uidnext - 1
        return super().append(folder, message, letters, when)


def test_an_upload_gmail_drops_is_neither_repeated_nor_deleted(fake, monkeypatch):
    s = gmail(fake, monkeypatch, DroppingGmailSession)
    server = s.server
    bodies = [make_message(i, size=200) for i in range(3)]
    server.folder("INBOX")
    for name in (ALL_MAIL, "Work"):
        for body in bodies:
            server.folder(name).add(body)
    server.folder("Family")
    assert s.sync().ok
    # The user copies a Work message into Family: Gmail drops that upload.
    work, family = s.local_path("Work"), s.local_path("Family")
    source = next(p for sub in ("new", "cur") for p in (work / sub).iterdir())
    (family / "cur" / "copied.x:2,S").write_bytes(source.read_bytes())
    first = s.sync()
    assert first.ok, first.error
    assert (first.uploaded, first.skipped) == (0, 1)
    assert len([e for e in server.log if e[0] == "dropped"]) == 1
    for _ in range(2):                                  # no loop, no local deletion
        again = s.sync()
        assert again.ok and (again.uploaded, again.deleted_local) == (0, 0)
    assert len([e for e in server.log if e[0] == "dropped"]) == 1
    assert (family / "cur" / "copied.x:2,S").exists()


def test_a_label_added_after_a_sync_is_filled_by_local_copies_not_downloads(fake,
                                                                             monkeypatch):
    """Next week the user labels old mail: the new label's folder is filled from the
    copies already stored, across runs; a copy the user deleted meanwhile is downloaded."""
    s = gmail(fake, monkeypatch)
    bodies = [make_message(i, size=300) for i in range(20)]
    s.server.folder("INBOX")
    for body in bodies:
        s.server.folder(ALL_MAIL).add(body)
    assert s.sync().ok
    assert set(s.server.fetched.values()) == {1}
    gone = next(p for sub in ("new", "cur") for p in (s.local_path(ALL_MAIL) / sub).iterdir()
                if p.read_bytes() == bodies[0])
    gone.unlink()                                   # the user deletes one copy locally
    late = s.server.folder("Later")
    for body in bodies[:10]:
        late.add(body, "F")
    result = s.sync()
    assert result.ok, result.error
    assert s.local_bodies("Later") == sorted(bodies[:10])
    assert (result.copied, result.downloaded) == (9, 1)
    assert s.server.fetched[bodies[0]] == 2          # the deleted copy: downloaded again
    assert all(s.server.fetched[b] == 1 for b in bodies[1:])
