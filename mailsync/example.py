"""The commented example config that `mailsync init` writes."""

from __future__ import annotations

import os
from pathlib import Path

from mailsync.errors import UsageError, local_io_error

EXAMPLE = '''\
# mailsync configuration. Every key is described in `man mailsync`.
# Check it with `mailsync check`, then run `mailsync run` (cron calls that).

[defaults]
# Any account key may be set here for all accounts.
maildir_root = "~/Mail"          # an account's maildir defaults to <maildir_root>/<name>

[accounts.home]
protocol = "pop3"                # pop3 | imap
host = "pop.example.net"
# port = 995                     # default: 995/993 with implicit TLS, 110/143 otherwise
# tls = "implicit"               # implicit | starttls | none (needs allow_plaintext = true)
# ca_file = "~/certs/ca.pem"     # trust this CA in addition to the system store
user = "me@example.net"
password_command = "pass show mail/home"   # or password_env = "VAR", or password = "..."
# maildir = "~/Mail/home"
keep = false                     # leave messages on the server after download
# keep_days = 14                 # with keep: delete on the server this many days after download
# max_size = "20M"               # leave larger messages on the server
# limit = 0                      # at most this many messages per run (0: no limit)
# timeout = 60                   # seconds to wait for the server
# report_after = "6h"            # with -q, keep a failure to connect quiet this long
# post_sync_command = "notmuch new"   # run after the account's run
# deliver = "mda"                # maildir (the default) | mda | lmtp (with lmtp_address)
# mda_command = "/usr/lib/dovecot/dovecot-lda -d me"   # gets each message on its stdin

# [accounts.work]
# protocol = "imap"
# host = "imap.example.com"
# user = "me@example.com"
# password_command = "pass show mail/work"
# mode = "sync"                  # sync | pull | push | backup
# folders = ["*"]
# exclude = ["Junk"]
# layout = "maildir++"           # maildir++ (modified UTF-7 names, as Dovecot) | maildir++-utf8 | fs
# max_delete = 0.5               # refuse a folder whose run would delete more than this share
'''


def write_example(path: Path) -> None:
    """Create path with the example, private to the user; never overwrite."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; mailsync init never overwrites a file",
                         "edit it, or name another path: mailsync init PATH") from None
    except OSError as exc:
        raise local_io_error(exc, str(path)) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(EXAMPLE)
