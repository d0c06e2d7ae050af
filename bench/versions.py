"""Two versions of mailsync side by side, paired per round: did a change make it slower?

    .venv/bin/python bench/versions.py BEFORE_CHECKOUT [AFTER_CHECKOUT] [--messages 10000]
                                       [--rounds 15]

e.g. `git worktree add /tmp/before <commit>` then `bench/versions.py /tmp/before`.
A private Dovecot (tests/dovecot.py) holds --messages messages in five folders; each
version syncs them into a Maildir and state of its own (`python -m mailsync` with the
checkout on PYTHONPATH, this virtualenv's libraries). Then, every round, in alternating
order: both run a no-op resync; the same ~1 % change is made on the server (flags
toggled, as many expunged, as many appended, in every folder); both resync it. Printed:
each version's median wall and CPU (user + system) seconds, and the median of the
per-round ratios after/before, which is what the two runs of one round share that makes
them comparable on a machine that is not quiet.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.conftest import write_config  # noqa: E402
from tests.corpus import make_corpus  # noqa: E402
from tests.dovecot import Dovecot  # noqa: E402
from tests.imaphelp import Remote  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("before")
ap.add_argument("after", nargs="?", default=str(ROOT))
ap.add_argument("--messages", type=int, default=10000)
ap.add_argument("--rounds", type=int, default=15)
args = ap.parse_args()
VERSIONS = {"before": args.before, "after": args.after}
PY = sys.executable
N, ROUNDS = args.messages, args.rounds
FOLDERS = ["INBOX", "Archive", "Lists", "Sent", "Work"]

def run(ver, cfg):
    env = dict(os.environ, PYTHONPATH=VERSIONS[ver])
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run([PY, "-m", "mailsync", "-c", str(cfg), "sync"], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert p.returncode == 0, (ver, p.stderr[-500:])
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

base = Path(tempfile.mkdtemp(prefix="mailsync-versions-"))
dc = Dovecot().start()
try:
    user = dc.new_user()
    corpus = make_corpus(N + 2000)
    per = N // len(FOLDERS)
    for i, f in enumerate(FOLDERS):
        dc.seed(user, corpus[i * per:(i + 1) * per], folder=f, flags="S" if i % 2 else "")
    cfgs = {}
    for ver in VERSIONS:
        d = base / ver; d.mkdir()
        cfgs[ver] = write_config(d / "config.toml", "b", {
            "protocol": "imap", "host": dc.host, "port": dc.imaps_port, "user": user,
            "password": dc.password, "ca_file": str(dc.ca_file), "maildir": str(d / "Mail"),
            "state_dir": str(d / "state"), "timeout": 60})
        run(ver, cfgs[ver]); run(ver, cfgs[ver])
    remote = Remote(dc, user)
    rng = random.Random(1)
    spare = iter(corpus[N:])
    res = {v: {"noop": [], "change": []} for v in VERSIONS}
    for r in range(ROUNDS):
        order = list(VERSIONS) if r % 2 == 0 else list(VERSIONS)[::-1]
        time.sleep(2.2)
        for v in order:
            res[v]["noop"].append(run(v, cfgs[v]))
        # 1 %: appends, flag changes and expunges spread over the folders
        for f in FOLDERS:
            remote.c.select_folder(f)
            uids = remote.c.search("ALL")
            k = max(1, len(uids) // 300)
            for u in rng.sample(uids, k):
                remote.c.add_flags([u], [b"\\Flagged"]) if rng.random() < .5 else remote.c.remove_flags([u], [b"\\Seen"])
            gone = rng.sample(uids, k)
            remote.c.add_flags(gone, [b"\\Deleted"]); remote.c.uid_expunge(gone)
            for _ in range(k):
                remote.c.append(f, next(spare).replace(b"\n", b"\r\n"))
        time.sleep(2.2)
        for v in order:
            res[v]["change"].append(run(v, cfgs[v]))
    for scen in ("noop", "change"):
        for v in VERSIONS:
            walls = [w for w, _ in res[v][scen]]; cpus = [c for _, c in res[v][scen]]
            print(f"{scen:7} {v:7} wall median {statistics.median(walls):.3f} s  cpu median {statistics.median(cpus):.3f} s  (n={len(walls)})")
        ratio_w = statistics.median([a[0] / b[0] for a, b in zip(res['after'][scen], res['before'][scen])])
        ratio_c = statistics.median([a[1] / b[1] for a, b in zip(res['after'][scen], res['before'][scen])])
        print(f"{scen:7} after/before per round: wall {ratio_w:.3f}x  cpu {ratio_c:.3f}x")
finally:
    dc.stop()                      # by pid
    subprocess.run(["rm", "-rf", str(base)])
