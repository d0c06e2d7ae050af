"""Real readers of the synced Maildir (issue 16): notmuch, and a second Dovecot serving it.

notmuch indexes it with the right unread and flagged counts, and a flag set in notmuch
reaches the server on the next sync. A second Dovecot serving the Maildir (an offline
machine serving its copy to other devices) shows the same folders, counts and flags as
the origin when told that folder names on disk are UTF-8 (`:UTF-8` in mail_location, as
README "Servers" says); mailsync writes `.Entwürfe`, where Dovecot's default expects
modified UTF-7 on disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from mailsync import imap
from tests.corpus import make_message
from tests.dovecot import Dovecot, require_dovecot, require_or_skip
from tests.imaphelp import Remote

FOLDER = "Entwürfe"
SEEDED = {"INBOX": ["S", "S", "FS", "", "", ""], FOLDER: ["", "F"]}


def seed(s) -> dict[str, list[bytes]]:
    bodies: dict[str, list[bytes]] = {}
    n = 0
    s.remote.create(FOLDER)
    for folder, flags in SEEDED.items():
        bodies[folder] = []
        for letters in flags:
            body = make_message(n, size=400)
            s.remote.append(folder, body, letters)
            bodies[folder].append(body)
            n += 1
    return bodies


def _notmuch() -> str:
    found = shutil.which("notmuch")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("notmuch is missing (apt-get install notmuch)")
        pytest.skip("notmuch is not installed")
    return found


def test_notmuch_reads_the_flags_and_its_flag_reaches_the_server(imap_account, tmp_path):
    notmuch = _notmuch()
    s = imap_account()
    bodies = seed(s)
    assert s.sync().code == 0
    config = tmp_path / "notmuch-config"
    config.write_text(f"[database]\npath={s.acct.maildir}\n[new]\ntags=unread;inbox;\n"
                      "[maildir]\nsynchronize_flags=true\n")
    env = {**os.environ, "NOTMUCH_CONFIG": str(config)}

    def nm(*args: str) -> str:
        done = subprocess.run([notmuch, *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    nm("new")
    assert nm("count", "*") == "8"
    assert nm("count", "tag:unread") == "5"          # 3 unseen in INBOX, 2 in Entwürfe
    assert nm("count", "tag:flagged") == "2"
    assert nm("count", f"folder:.{FOLDER}") == "2"
    target = bodies["INBOX"][3]
    message_id = imap.parse_message_id(target.split(b"\n\n", 1)[0]).strip("<>")
    nm("tag", "+flagged", "-unread", "--", f"id:{message_id}")   # renames the file: FS
    result = s.sync()
    assert result.code == 0, result.err
    assert s.remote.flags_by_body("INBOX")[target] == "FS"


def test_a_second_dovecot_serves_the_synced_maildir(imap_account, tmp_path):
    require_or_skip(require_dovecot, "dovecot not installed")
    second = Dovecot(extra_config="mail_location = maildir:~/Maildir:UTF-8\n")
    second.start()
    try:
        user = second.new_user()
        second._ensure_user(user)
        maildir = second.maildir(user)
        s = imap_account(maildir=str(maildir))
        seed(s)
        result = s.sync()
        assert result.code == 0, result.err
        if os.geteuid() == 0:                       # its mail processes run as nobody
            for path in [maildir, *maildir.rglob("*")]:
                os.chown(path, second.mail_uid, second.mail_gid)
        reader = Remote(second, user)
        try:
            assert reader.folders() == s.remote.folders()
            for folder in SEEDED:
                assert reader.flags_by_body(folder) == s.remote.flags_by_body(folder), folder
        finally:
            reader.close()
    finally:
        second.stop()
