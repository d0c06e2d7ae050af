"""Real readers of the synced Maildir (issue 16): notmuch, neomutt, and a second Dovecot
serving it.

notmuch indexes it with the right unread and flagged counts, and a flag set in notmuch
reaches the server on the next sync; so does a flag neomutt sets (run on a pseudo-terminal
with a private muttrc, its keys pushed). A second Dovecot serving the Maildir (an offline
machine serving its copy to other devices) with its default settings shows the same
folders, counts and flags as the origin: in the default `maildir++` layout mailsync names
folders on disk in modified UTF-7 (`.Entw&APw-rfe`), as Dovecot and Courier do. With
`layout = "maildir++-utf8"` (`.Entwürfe`) Dovecot needs `:UTF-8` in mail_location. A folder
mailsync wrote in UTF-8 before keeps its name after the upgrade.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from mailsync import names
from mailsync.drivers import imap
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


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{name} is missing (apt-get install {name})")
        pytest.skip(f"{name} is not installed")
    return found


def _notmuch() -> str:
    return _tool("notmuch")


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
    on_disk = names.local_relpath((FOLDER,), "maildir++")
    assert on_disk == ".Entw&APw-rfe"                 # as Dovecot and Courier name it
    assert nm("count", f'folder:"{on_disk}"') == "2"
    target = bodies["INBOX"][3]
    message_id = imap.parse_message_id(target.split(b"\n\n", 1)[0]).strip("<>")
    nm("tag", "+flagged", "-unread", "--", f"id:{message_id}")   # renames the file: FS
    result = s.sync()
    assert result.code == 0, result.err
    assert s.remote.flags_by_body("INBOX")[target] == "FS"


def neomutt(muttrc: Path, maildir: Path, keys: str, home: Path) -> int:
    """neomutt on a pseudo-terminal (it needs one), opening maildir with muttrc alone
    (-n: no system muttrc) and these keys pushed; its exit code."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([_tool("neomutt"), "-n", "-F", str(muttrc), "-f", str(maildir),
                             "-e", f'push "{keys}"'],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "TERM": "xterm", "HOME": str(home)})
    os.close(slave)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    if not os.read(master, 65536):
                        break
                except OSError:      # EIO: neomutt closed the terminal
                    break
            elif proc.poll() is not None:
                break
        return proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_neomutt_flags_a_message_and_the_next_sync_carries_it_to_the_server(
        imap_account, tmp_path):
    _tool("neomutt")
    s = imap_account()
    bodies = seed(s)
    assert s.sync().code == 0
    target = bodies["INBOX"][4]                            # unseen, unflagged
    message_id = imap.parse_message_id(target.split(b"\n\n", 1)[0]).strip("<>")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"""set mbox_type = Maildir
set folder = "{s.acct.maildir}"
set spoolfile = "+"
set header_cache = ""
set message_cachedir = ""
set mark_old = no
set wait_key = no
set quit = yes
set move = no
set beep = no
""")
    code = neomutt(muttrc, s.acct.maildir,                 # tag it by its Message-ID
                   f"<tag-pattern>~i '{message_id.split('@')[0]}'<enter>"
                   "<tag-prefix><flag-message><sync-mailbox><quit>", tmp_path)
    assert code == 0
    assert s.local.flags_by_body()[target] == "F"           # neomutt renamed the file
    result = s.sync()
    assert result.code == 0, result.err
    assert s.remote.flags_by_body("INBOX")[target] == "F"
    others = {b: f for b, f in s.remote.flags_by_body("INBOX").items() if b != target}
    assert others == {b: f for b, f in zip(bodies["INBOX"], SEEDED["INBOX"]) if b != target}


def second_dovecot_reads(s, second: Dovecot, user: str, maildir: Path) -> None:
    """The second Dovecot serving the synced Maildir shows the origin's folders, counts
    and flags."""
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


@pytest.mark.parametrize("layout,mail_location", [
    ("maildir++", ""),                                        # both sides' defaults
    ("maildir++-utf8", "mail_location = maildir:~/Maildir:UTF-8\n"),
], ids=["default-modified-utf7", "utf8-names-with-dovecot-told"])
def test_a_second_dovecot_serves_the_synced_maildir(imap_account, layout, mail_location):
    require_or_skip(require_dovecot, "dovecot not installed")
    second = Dovecot(extra_config=mail_location)
    second.start()
    try:
        user = second.new_user()
        second._ensure_user(user)
        maildir = second.maildir(user)
        s = imap_account(maildir=str(maildir), layout=layout)
        seed(s)
        result = s.sync()
        assert result.code == 0, result.err
        assert (maildir / names.local_relpath((FOLDER,), layout)).is_dir()
        second_dovecot_reads(s, second, user, maildir)
    finally:
        second.stop()


def test_a_folder_written_in_utf8_before_keeps_its_name_after_the_upgrade(imap_account):
    s = imap_account(layout="maildir++-utf8")     # what maildir++ wrote before
    bodies = seed(s)
    assert s.sync().code == 0
    old, new = s.acct.maildir / ".Entwürfe", s.acct.maildir / ".Entw&APw-rfe"
    assert old.is_dir() and not new.exists()
    config = s.acct.config.read_text()
    s.acct.config.write_text(config.replace('layout = "maildir++-utf8"\n', ""))
    assert "layout" not in s.acct.config.read_text()         # the default: maildir++
    folders = s.remote.folders()
    later = make_message(99, size=400)
    s.remote.append(FOLDER, later)
    result = s.sync()
    assert result.code == 0, result.err
    summary = result.json["accounts"][0]
    assert (summary["downloaded"], summary["uploaded"]) == (1, 0)
    assert not new.exists()                                   # no second copy
    local = sorted(p.read_bytes() for sub in ("new", "cur") for p in (old / sub).iterdir())
    assert local == sorted(bodies[FOLDER] + [later])
    assert s.remote.folders() == folders                      # nothing created
    assert s.remote.bodies(FOLDER) == sorted(bodies[FOLDER] + [later])
