"""Profile one mailsync POP3 fetch of the big corpus under cProfile (or another wrapper).

    python bench/pop3_profile.py [--messages 2000] [--top 25] [--sort cumtime]
    python bench/pop3_profile.py --wrap "strace -f -c -o /tmp/ms.strace"

Starts a private Dovecot, seeds a fresh user with make_corpus(n, big=True),
writes a mailsync config and runs

    python -m cProfile -s cumtime -m mailsync -c CONFIG --no-progress fetch

from the repo root (PYTHONPATH = repo root), then prints the profile's header
and its first --top rows, and verifies the result like bench/pop3.py.  With
--wrap the command is instead ``WRAP python -m mailsync ...`` (no cProfile), and
--tool mpop|getmail6 runs that tool under WRAP instead.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (ROOT, SETUP, TOOLS, Dovecot, build_corpus, scratch_dir,  # noqa: E402
                    verify)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", default="cumtime", help="cProfile sort key (default cumtime)")
    ap.add_argument("--wrap", default="", help="run under this command instead of cProfile")
    ap.add_argument("--tool", default="mailsync", choices=TOOLS)
    args = ap.parse_args(argv)
    if args.tool != "mailsync" and not args.wrap:
        ap.error("--tool other than mailsync needs --wrap")

    corpus, _ = build_corpus(args.messages)
    scratch = scratch_dir()
    dc = Dovecot()
    try:
        dc.start()
        user = dc.new_user()
        dc.seed(user, corpus)
        work = Path(tempfile.mkdtemp(prefix="profile-", dir=scratch))
        cmd, env, maildir = SETUP[args.tool](dc, user, work)
        if args.wrap:
            cmd = [*shlex.split(args.wrap), *cmd]
        else:
            cmd = [cmd[0], "-m", "cProfile", "-s", args.sort, *cmd[1:]]
        print("$", shlex.join(cmd), flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=900,
                              stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        out = done.stdout.decode(errors="replace").splitlines()
        if args.wrap:
            print("\n".join(out[-40:]))
        else:
            # the summary line(s), the "ncalls tottime ..." header, then the top rows
            head = next((i for i, ln in enumerate(out) if ln.lstrip().startswith("ncalls")), 0)
            print("\n".join(out[:head + 1 + args.top]))
        err = done.stderr.decode(errors="replace").strip()
        if err:
            print(err[-3000:])
        print(f"exit status {done.returncode}, wall {wall:.2f} s (including the wrapper)")
        checked = verify(args.tool, corpus, maildir, dc, user)
        print(f"verified {checked['messages']} messages, server empty")
    finally:
        dc.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
