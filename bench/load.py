"""Load test: an IMAP account of many small messages in many folders syncs and resyncs
correctly; prints wall time and peak RSS of each run.

    .venv/bin/python bench/load.py [--messages 50000] [--folders 50] [--json]

Starts a private Dovecot (tests/dovecot.py) on loopback and seeds one user straight into
its Maildir: --messages deterministic messages of a few KB (2-4 KB, unique Message-ID,
about a third \\Seen, a few \\Flagged) spread evenly over --folders folders (INBOX and
Folder01..). Then three runs of `python -m mailsync sync`, each under
`/usr/bin/time -f %M` (peak RSS of the process tree's largest member):

1. initial: everything into an empty Maildir;
2. no-op:   the same again, nothing changed;
3. change:  after 1 % of the messages changed (server flags, local flags, server
            expunges, new server mail), to show an ordinary day's resync.

After every run the Maildir is verified against what the server should hold, folder by
folder: the multiset of SHA-256 digests of every message (counts, no duplicates, no
loss, all bytes) and the flags of every message; the server's own Maildir is counted
too. A run that does not verify makes the script exit 1; numbers are printed anyway.
Not part of the test suite (it takes minutes); nothing is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.dovecot import Dovecot  # noqa: E402

GNU_TIME = "/usr/bin/time"
WORDS = ("mail server message folder sync fetch download mailbox inbox archive report "
         "meeting budget attached please review thanks regards project update schedule "
         "invoice delivery network config release version patch build test deploy").split()


def folder_names(count: int) -> list[str]:
    return ["INBOX"] + [f"Folder{k:02d}" for k in range(1, count)]


def make_message(i: int) -> bytes:
    rng = random.Random(i)
    size = rng.randint(2000, 4000)
    words = []
    length = 0
    while length < size:
        w = rng.choice(WORDS)
        words.append(w)
        length += len(w) + 1
    lines = [" ".join(words[k:k + 12]) for k in range(0, len(words), 12)]
    header = (f"From: sender{i % 97}@example.org\nTo: user@example.net\n"
              f"Subject: load message {i}\nDate: Mon, 02 Jan 2023 08:00:00 +0000\n"
              f"Message-ID: <{i}.load@bench.mailsync.test>\nX-Load-Index: {i}\n\n")
    return (header + "\n".join(lines) + "\n").encode()


def initial_flags(i: int) -> str:
    return "FS" if i % 50 == 7 else "S" if i % 3 == 0 else ""


class Expected:
    """What both sides should hold: folder -> {index: flags}."""

    def __init__(self, n: int, folders: list[str]) -> None:
        self.folders = folders
        self.where: dict[str, dict[int, str]] = {f: {} for f in folders}
        for i in range(n):
            self.where[folders[i % len(folders)]][i] = initial_flags(i)

    def digests(self, folder: str) -> Counter:
        return Counter(_digest(make_message(i)) for i in self.where[folder])


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_path(maildir: Path, folder: str) -> Path:
    return maildir if folder == "INBOX" else maildir / f".{folder}"


def verify(maildir: Path, expected: Expected, dc: Dovecot, user: str) -> list[str]:
    problems = []
    for folder in expected.folders:
        path = local_path(maildir, folder)
        digests, flags = Counter(), {}
        for sub in ("new", "cur"):
            d = path / sub
            if not d.is_dir():
                continue
            for name in os.listdir(d):
                data = (d / name).read_bytes()
                digests[_digest(data)] += 1
                index = int(data.split(b"X-Load-Index: ", 1)[1].split(b"\n", 1)[0])
                info = name.partition(":2,")[2]
                flags[index] = "".join(sorted(c for c in info if c in "DFPRST"))
        want = expected.digests(folder)
        if digests != want:
            missing = sum((want - digests).values())
            extra = sum((digests - want).values())
            problems.append(f"{folder}: {sum(digests.values())} local messages, "
                            f"{missing} missing, {extra} extra or duplicated")
            continue
        wrong = [i for i, f in expected.where[folder].items() if flags.get(i) != f]
        if wrong:
            problems.append(f"{folder}: {len(wrong)} messages with wrong local flags "
                            f"(e.g. #{wrong[0]}: {flags.get(wrong[0])!r} != "
                            f"{expected.where[folder][wrong[0]]!r})")
        server = dc.folder_path(user, folder)
        on_server = sum(len(os.listdir(server / sub)) for sub in ("new", "cur")
                        if (server / sub).is_dir())
        if on_server != len(expected.where[folder]):
            problems.append(f"{folder}: {on_server} messages on the server, "
                            f"{len(expected.where[folder])} expected")
    return problems


def measured(cmd: list[str], env: dict) -> tuple[float, int | None, subprocess.CompletedProcess]:
    """Wall seconds, peak RSS in KB (GNU time), and the completed process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        wrapped = [GNU_TIME, "-f", "%M", "-o", out.name, *cmd] if os.access(GNU_TIME, os.X_OK) \
            else cmd
        started = time.perf_counter()
        done = subprocess.run(wrapped, env=env, capture_output=True, timeout=3600)
        wall = time.perf_counter() - started
        text = out.read().strip().splitlines()
    rss = int(text[-1]) if text and text[-1].isdigit() else None
    return wall, rss, done


def change_one_percent(expected: Expected, dc: Dovecot, user: str, maildir: Path,
                       n: int, seed: int = 7) -> dict[str, int]:
    """Server flag changes, local flag changes, server expunges and new server mail,
    each about 0.25 % of the messages, made straight in the two Maildirs."""
    rng = random.Random(seed)
    quarter = max(1, n // 400)
    counts = Counter()
    all_ids = [(f, i) for f in expected.folders for i in expected.where[f]]
    picks = rng.sample(all_ids, 3 * quarter)
    for kind, chunk in zip(("server-flag", "local-flag", "server-expunge"),
                           (picks[:quarter], picks[quarter:2 * quarter], picks[2 * quarter:])):
        for folder, i in chunk:
            side = dc.folder_path(user, folder) if kind != "local-flag" \
                else local_path(maildir, folder)
            path = _find(side, i)
            if path is None:
                continue
            if kind == "server-expunge":
                path.unlink()
                del expected.where[folder][i]
            else:
                key = path.name.partition(":2,")[0]
                new = "".join(sorted(set(expected.where[folder][i]) ^ {"F"}))
                os.rename(path, path.parent.parent / "cur" / f"{key}:2,{new}")
                expected.where[folder][i] = new
            counts[kind] += 1
    for k in range(quarter):
        i = n + k
        folder = expected.folders[i % len(expected.folders)]
        dc.seed(user, [make_message(i)], folder=folder)
        expected.where[folder][i] = ""
        counts["server-new"] += 1
    return dict(counts)


def _find(folder_path: Path, index: int) -> Path | None:
    needle = f"X-Load-Index: {index}\n".encode()
    for sub in ("cur", "new"):
        d = folder_path / sub
        for name in os.listdir(d):
            p = d / name
            if needle in p.read_bytes()[:600]:
                return p
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--folders", type=int, default=50)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-change", action="store_true", help="skip the third run")
    args = ap.parse_args()
    folders = folder_names(args.folders)
    scratch = Path(tempfile.mkdtemp(prefix="mailsync-load-"))
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    dc = Dovecot()
    results: dict = {"messages": args.messages, "folders": args.folders, "runs": []}
    ok = True
    try:
        dc.start()
        user = dc.new_user()
        expected = Expected(args.messages, folders)
        started = time.perf_counter()
        total_bytes = 0
        for folder in folders:
            by_flags: dict[str, list[bytes]] = {}
            for i in expected.where[folder]:
                msg = make_message(i)
                total_bytes += len(msg)
                by_flags.setdefault(initial_flags(i), []).append(msg)
            for flags, msgs in by_flags.items():
                dc.seed(user, msgs, folder=folder, flags=flags)
        results["seed_seconds"] = round(time.perf_counter() - started, 1)
        results["corpus_mb"] = round(total_bytes / 1e6, 1)
        log(f"seeded {args.messages} messages ({results['corpus_mb']} MB) in "
            f"{len(folders)} folders in {results['seed_seconds']} s")
        maildir, state = scratch / "Mail", scratch / "state"
        config = scratch / "config.toml"
        config.write_text("[accounts.load]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in {
            "protocol": "imap", "host": dc.host, "port": dc.imaps_port, "user": user,
            "password": dc.password, "ca_file": str(dc.ca_file), "maildir": str(maildir),
            "state_dir": str(state), "timeout": 300}.items()) + "\n")
        config.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSYNC_")}
        env["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-m", "mailsync", "-c", str(config), "--json", "--no-progress",
               "sync"]
        runs = ["initial", "no-op"] + ([] if args.no_change else ["change"])
        for name in runs:
            changes = None
            if name == "change":
                changes = change_one_percent(expected, dc, user, maildir, args.messages)
            wall, rss, done = measured(cmd, env)
            try:
                summary = json.loads(done.stdout)["accounts"][0]
            except (ValueError, IndexError, KeyError):
                summary = {}
            problems = [] if done.returncode == 0 else [
                f"exit {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}"]
            started = time.perf_counter()
            problems += verify(maildir, expected, dc, user)
            verify_s = time.perf_counter() - started
            if name == "no-op" and any(summary.get(k) for k in (
                    "downloaded", "uploaded", "flags_changed", "deleted_local",
                    "deleted_remote", "bytes_downloaded")):
                problems.append(f"the no-op resync changed something: {summary}")
            run = {"run": name, "seconds": round(wall, 2),
                   "peak_rss_mb": round(rss / 1024, 1) if rss else None,
                   "exit_code": done.returncode, "verified": not problems,
                   "problems": problems[:5], "verify_seconds": round(verify_s, 1),
                   **{k: summary.get(k) for k in ("downloaded", "uploaded", "flags_changed",
                                                  "deleted_local", "deleted_remote")}}
            if changes:
                run["changes"] = changes
            results["runs"].append(run)
            ok &= not problems
            log(f"{name:8s} {wall:8.2f} s  peak RSS {run['peak_rss_mb']} MB  exit "
                f"{done.returncode}  downloaded {run['downloaded']} uploaded "
                f"{run['uploaded']} flags {run['flags_changed']} deleted "
                f"{run['deleted_local']}/{run['deleted_remote']}  "
                + ("verified" if not problems else "NOT VERIFIED: " + "; ".join(problems[:3])))
    finally:
        dc.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
