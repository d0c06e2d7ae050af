"""A throwaway end-to-end demo: private Dovecot, sample mail, `mailsync fetch`.

Run by `bash .ci/demo` (or `python -m tests.demo` once set up). Everything lives in
a temporary folder that is removed at the end; pass --keep to keep the Maildir.
"""

from __future__ import annotations

import argparse
import mailbox
import shutil
import subprocess
import sys
import tempfile
from email.header import decode_header, make_header
from pathlib import Path

from tests.conftest import write_config
from tests.corpus import make_corpus
from tests.dovecot import Dovecot


def subject_of(msg: mailbox.MaildirMessage) -> str:
    try:
        return str(make_header(decode_header(msg.get("Subject", ""))))
    except Exception:  # a sample with a broken header still shows something
        return str(msg.get("Subject", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the demo folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mailsync-demo-"))
    server = Dovecot()
    try:
        server.start()
        user = server.new_user("demo")
        mail = make_corpus(args.messages, big=True, big_every=50)
        server.seed(user, mail)
        print(f"Started a private Dovecot on {server.host} (POP3S port {server.pop3s_port}) "
              f"with {len(mail)} sample messages ({sum(map(len, mail)) / 1e6:.1f} MB) "
              f"for user {user}.\n")
        config = write_config(work / "config.toml", "demo", {
            "protocol": "pop3", "host": server.host, "port": server.pop3s_port,
            "user": user, "password": server.password, "ca_file": str(server.ca_file),
            "maildir": str(work / "Mail" / "demo"), "state_dir": str(work / "state")})
        print(f"Config {config}:\n{config.read_text()}")
        for title in ("First run: everything is downloaded, then deleted on the server",
                      "Second run: nothing new"):
            print(f"$ mailsync -c {config} fetch    # {title}")
            done = subprocess.run([sys.executable, "-m", "mailsync", "-c", str(config),
                                   "fetch"])
            if done.returncode != 0:
                return done.returncode
            print()
        box = mailbox.Maildir(work / "Mail" / "demo", create=False)
        print(f"The Maildir {box._path} holds {len(box)} messages; the server holds "
              f"{len(server.server_messages(user))}. A few subjects:")
        for _, msg in list(box.items())[:5]:
            print(f"  {subject_of(msg)[:70]}")
        print(f"\n$ mailsync -c {config} status")
        subprocess.run([sys.executable, "-m", "mailsync", "-c", str(config), "status"])
        return 0
    finally:
        server.stop()
        if args.keep:
            print(f"\nKept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
