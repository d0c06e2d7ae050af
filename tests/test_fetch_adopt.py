"""A first POP3 fetch into a Maildir another tool filled (getmail6, run for real against
the test Dovecot), or mailsync's own after its state was lost: what the server still
holds and the Maildir already has is recorded, never stored a second time."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.corpus import make_corpus, make_message
from tests.peers import require


def getmail_fill(acct, home: Path) -> None:
    """One `getmail` run (delete = false: a user who kept mail on the server) into the
    account's Maildir, with getmail6's default added headers (Delivered-To, Received)."""
    require("getmail")
    home.mkdir(parents=True, exist_ok=True)
    # getmail refuses to deliver as root: it delivers as `nobody`, into a Maildir in a
    # folder nobody can reach (pytest's are root's alone), copied into place afterwards.
    drop = Path(tempfile.mkdtemp(prefix="mailsync-getmail-"))
    try:
        drop.chmod(0o755)
        for sub in ("", "cur", "new", "tmp"):
            (drop / "Mail" / sub).mkdir(exist_ok=True)
            shutil.chown(drop / "Mail" / sub, "nobody")
        _run_getmail(acct, home, drop / "Mail")
        shutil.copytree(drop / "Mail", acct.maildir, dirs_exist_ok=True)
    finally:
        shutil.rmtree(drop)
    for path in [acct.maildir, *acct.maildir.rglob("*")]:
        shutil.chown(path, "root", "root")


def _run_getmail(acct, home: Path, maildir: Path) -> None:
    rc = home / "getmailrc"
    rc.write_text(f"""[retriever]
type = SimplePOP3SSLRetriever
server = {acct.server.host}
port = {acct.server.pop3s_port}
username = {acct.user}
password = {acct.server.password}
ca_certs = {acct.server.ca_file}

[destination]
type = Maildir
path = {maildir}/
user = nobody

[options]
delete = false
read_all = false
verbose = 0
""")
    # Output to a file, not a pipe: a helper getmail forks to deliver as `nobody` must not
    # keep the run waiting for the pipe's end. A run that still stalls (seen once in a
    # loaded CI run, never alone) is killed by pid and run again from scratch: what it
    # delivered and getmail's record of it are removed first.
    log = home / "getmail.log"
    for attempt in range(2):
        for stale in [*home.glob("oldmail-*"),
                      *(f for sub in ("cur", "new", "tmp") for f in (maildir / sub).iterdir())]:
            stale.unlink()
        with open(log, "wb") as out:
            try:
                done = subprocess.run(["getmail", f"--getmaildir={home}", f"--rcfile={rc}"],
                                      stdout=out, stderr=subprocess.STDOUT, timeout=45,
                                      stdin=subprocess.DEVNULL,
                                      env={"HOME": str(home), "PATH": "/usr/bin:/bin",
                                           "LANG": "C.UTF-8"})
            except subprocess.TimeoutExpired:
                continue
        assert done.returncode == 0, log.read_text()
        return
    raise AssertionError("getmail stalled twice: " + log.read_text())


def summary(result) -> dict:
    assert result.code == 0, result.err
    return result.json["accounts"][0]


def bodies(messages: list[bytes]) -> list[bytes]:
    return sorted(m.partition(b"\n\n")[2] for m in messages)


def test_maildir_filled_by_getmail_is_not_filled_twice(make_account, tmp_path):
    corpus = make_corpus(15)
    acct = make_account(keep=True)
    acct.server.seed(acct.user, corpus)
    getmail_fill(acct, tmp_path / "getmail")
    assert len(acct.local_messages()) == 15
    assert all(m.startswith(b"Delivered-To:") or b"\nReceived: from" in m[:400]
               for m in acct.local_messages())    # getmail's own header lines on top
    first = summary(acct.run("--json", "fetch"))
    assert (first["downloaded"], first["paired"]) == (0, 15)
    assert len(acct.local_messages()) == 15 and len(acct.server_messages()) == 15
    acct.server.seed(acct.user, [make_message(900)])
    second = summary(acct.run("--json", "fetch"))
    assert (second["downloaded"], second["paired"]) == (1, 0)
    assert bodies(acct.local_messages()) == bodies(corpus + [make_message(900)])


def test_switching_from_getmail_with_delete_on_empties_the_server_without_copies(
        make_account, tmp_path):
    corpus = make_corpus(8)
    acct = make_account(keep=False)
    acct.server.seed(acct.user, corpus)
    getmail_fill(acct, tmp_path / "getmail")
    done = summary(acct.run("--json", "fetch"))
    assert (done["downloaded"], done["paired"], done["deleted_remote"]) == (0, 8, 8)
    assert acct.server_messages() == []
    assert bodies(acct.local_messages()) == bodies(corpus)


def test_lost_state_with_mail_kept_on_the_server_downloads_nothing_twice(make_account):
    corpus = make_corpus(10)
    acct = make_account(keep=True)
    acct.server.seed(acct.user, corpus)
    assert summary(acct.run("--json", "fetch"))["downloaded"] == 10
    shutil.rmtree(acct.state_dir)
    again = summary(acct.run("--json", "fetch"))
    assert (again["downloaded"], again["paired"]) == (0, 10)
    assert sorted(acct.local_messages()) == sorted(corpus)


def test_a_message_the_server_holds_twice_but_the_maildir_once_is_stored_once_more(
        make_account):
    twin = make_message(910)
    acct = make_account(keep=True)
    acct.server.seed(acct.user, [twin])
    assert summary(acct.run("--json", "fetch"))["downloaded"] == 1
    shutil.rmtree(acct.state_dir)
    acct.server.seed(acct.user, [twin])
    again = summary(acct.run("--json", "fetch"))
    assert (again["downloaded"], again["paired"]) == (1, 1)
    assert acct.local_messages() == [twin, twin]


def test_once_a_fetch_completed_later_runs_no_longer_compare_with_the_maildir(make_account):
    acct = make_account(keep=True)
    acct.server.seed(acct.user, make_corpus(3))
    assert summary(acct.run("--json", "fetch"))["downloaded"] == 3
    copied = make_message(920)
    (acct.maildir / "new" / "copied-by-hand").write_bytes(copied)
    acct.server.seed(acct.user, [copied])
    later = summary(acct.run("--json", "fetch"))
    assert (later["downloaded"], later["paired"]) == (1, 0)   # no Maildir scan any more


def test_adopting_fetch_killed_at_any_step_then_rerun_stores_each_message_once(
        make_account, tmp_path):
    from tests.test_fetch_pop3 import count_steps
    corpus = make_corpus(12)

    def lost_state_with_news():
        acct = make_account(keep=False)
        acct.server.seed(acct.user, corpus[:9])
        assert acct.run("fetch").code == 0            # 9 stored, the server emptied
        shutil.rmtree(acct.state_dir)
        acct.server.seed(acct.user, corpus[:6] + corpus[9:])   # 6 old ones come back, 3 new
        return acct

    steps = sum(count_steps(lost_state_with_news(), tmp_path).values())
    for point in range(1, steps + 1):
        acct = lost_state_with_news()
        killed = acct.popen("--no-progress", "fetch", env={"MAILSYNC_CRASH_AT": str(point)})
        killed.wait(timeout=120)
        assert killed.returncode == -9, f"step {point}: {killed.stderr.read().decode()}"
        rerun = acct.run("fetch")
        assert rerun.code == 0, f"step {point}: {rerun.err}"
        assert sorted(acct.local_messages()) == sorted(corpus), f"step {point}"
        assert acct.server_messages() == [], f"step {point}"
