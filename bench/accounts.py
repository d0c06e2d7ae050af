"""Many accounts: `mailsync run` over 100 accounts against `mbsync -a` with 100 channels,
and mailsync's no-op time and memory from 100 to 1,000 accounts.

    .venv/bin/python bench/accounts.py [--accounts 100] [--messages 200] [--repeat 3]
                                       [--scale 1000] [--jobs 8] [--json]

Starts a private Dovecot (tests/dovecot.py) on loopback; every account is its own
server user (Dovecot's static passdb lets any name log in), whose Maildir is a
hard-linked copy (``cp -al``) of one template of --messages messages
(tests.corpus.make_corpus: most 2-20 KB, a few with attachments up to 64 KB) in
INBOX and an Archive folder, with flags. Each tool gets its own users.

* mailsync: one config of a [defaults] template (``user = "{account}"``,
  ``maildir``, ``state_dir``) and one empty file per account in accounts.d/; the
  command is ``mailsync -c CONFIG --no-progress run`` (``--jobs`` as given, default
  the built-in 8; ``max_connections_per_host`` its default 8), installed into a
  virtualenv as bench/imap.py does, from the committed tree (HEAD, ``git archive``).
* mbsync: one mbsyncrc with an IMAPAccount, two stores and a Channel per account
  (``Patterns *``, ``Create Both``, ``Expunge Both``, ``SyncState *``); the command is
  ``mbsync -c RC -a``, which syncs the channels one after another.

Timed (bench/imap.py's measure(): wall seconds around the process, peak RSS of the
whole run from GNU time, the tool's CPU seconds): per repeat, each tool's initial
sync into empty Maildirs (fresh users) and then --repeat no-op runs, the tools
interleaved. Untimed before each run: no Maildir directory modified in the last 2 s
(mbsync 1.4 would sleep a second per channel otherwise), sync(2). A run counts only
when it exits 0 and every account's Maildir holds exactly the template's messages
per folder afterwards.

``--scale N``: mailsync alone, N accounts of 20 messages each: the no-op run's time
and peak RSS over the first 100, then all N accounts (the same users, two configs);
the per-account time and the memory should stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.imap as imapbench  # noqa: E402
from bench.common import _private_file  # noqa: E402
from tests.corpus import make_corpus  # noqa: E402
from tests.dovecot import Dovecot  # noqa: E402

FOLDERS = ("INBOX", "Archive")
TARGETS = {"noop": 0.2, "initial": 0.3}
RSS_TARGET_MB = 200.0


class BenchError(RuntimeError):
    pass


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# The server side ------------------------------------------------------------------------
def make_template(dc: Dovecot, messages: int) -> tuple[str, dict[str, int]]:
    corpus = make_corpus(messages, seed=11)
    user = dc.new_user("template")
    split = messages * 3 // 4
    dc.seed(user, corpus[:split], flags="")
    dc.seed(user, corpus[split:], folder="Archive", flags="S")
    return user, {"INBOX": split, "Archive": messages - split}


def clone_users(dc: Dovecot, template: str, count: int, prefix: str) -> list[str]:
    users = []
    src = dc.maildir(template)
    for _ in range(count):
        user = dc.new_user(prefix)
        dc.seed(user, [])
        done = subprocess.run(["cp", "-al", f"{src}/.", f"{dc.maildir(user)}/"],
                              capture_output=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"cp -al: {done.stderr.decode(errors='replace')}")
        users.append(user)
    return users


# The tools' configurations --------------------------------------------------------------
def mailsync_setup(dc: Dovecot, work: Path, users: list[str],
                   jobs: int | None) -> tuple[list[str], dict, Path]:
    work.mkdir(parents=True, exist_ok=True)
    config = _private_file(work / "config.toml", f"""\
[defaults]
protocol = "imap"
host = "{dc.host}"
port = {dc.imaps_port}
ca_file = "{dc.ca_file}"
password = "{dc.password}"
user = "{{account}}"
maildir = "{work}/Mail/{{account}}"
state_dir = "{work}/state/{{account}}"
timeout = 120
""")
    (work / "accounts.d").mkdir(exist_ok=True)
    for user in users:
        _private_file(work / "accounts.d" / f"{user}.toml", "")
    cmd = [str(imapbench.MAILSYNC), "-c", str(config), "--no-progress"]
    cmd += ["--jobs", str(jobs)] if jobs else []
    env = imapbench.ToolSetup(dc, "", work).tool_env()
    return cmd + ["run"], env, work / "Mail"


def mbsync_setup(dc: Dovecot, work: Path, users: list[str]) -> tuple[list[str], dict, Path]:
    work.mkdir(parents=True, exist_ok=True)
    blocks = []
    for user in users:
        mail = work / "Mail" / user
        mail.mkdir(parents=True, exist_ok=True)
        blocks.append(f"""\
IMAPAccount {user}
Host localhost
Port {dc.imaps_port}
User {user}
Pass {dc.password}
SSLType IMAPS
CertificateFile {dc.ca_file}

IMAPStore {user}-far
Account {user}

MaildirStore {user}-near
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel {user}
Far :{user}-far:
Near :{user}-near:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    rc = _private_file(work / "mbsyncrc", "\n".join(blocks))
    return ["mbsync", "-c", str(rc), "-a"], imapbench.ToolSetup(dc, "", work).tool_env(), \
        work / "Mail"


# Verification ---------------------------------------------------------------------------
def count_files(folder: Path) -> int:
    return sum(len(os.listdir(folder / sub)) for sub in ("cur", "new")
               if (folder / sub).is_dir())


def verify(tool: str, mail: Path, users: list[str], expected: dict[str, int]) -> None:
    for user in users:
        root = mail / user
        dirs = {"INBOX": root if tool == "mailsync" else root / "INBOX",
                "Archive": root / (".Archive" if tool == "mailsync" else "Archive")}
        for folder, want in expected.items():
            got = count_files(dirs[folder])
            if got != want:
                raise BenchError(f"{tool}: account {user} folder {folder}: {got} messages, "
                                 f"expected {want}")


def timed(tool: str, cmd: list[str], env: dict, work: Path, mail: Path, users: list[str],
          expected: dict[str, int], timeout: float, dc: Dovecot) -> imapbench.Measurement:
    imapbench.settle(mail)
    m = imapbench.measure(cmd, env, work, timeout, dc)
    if m.returncode != 0:
        raise BenchError(f"{tool} exited {m.returncode}: {m.output[-2000:]}")
    verify(tool, mail, users, expected)
    return m


# The comparison -------------------------------------------------------------------------
def compare(dc: Dovecot, scratch: Path, accounts: int, messages: int, repeat: int,
            jobs: int | None, timeout: float) -> dict:
    template, expected = make_template(dc, messages)
    runs: dict[str, dict[str, list]] = {t: {"initial": [], "noop": []}
                                        for t in ("mailsync", "mbsync")}
    for rep in range(repeat):
        order = ("mailsync", "mbsync") if rep % 2 == 0 else ("mbsync", "mailsync")
        for tool in order:
            users = clone_users(dc, template, accounts, "m" if tool == "mailsync" else "b")
            work = scratch / f"{tool}-{rep}"
            cmd, env, mail = (mailsync_setup(dc, work, users, jobs) if tool == "mailsync"
                              else mbsync_setup(dc, work, users))
            log(f"repeat {rep + 1}: {tool} initial sync of {accounts} accounts")
            runs[tool]["initial"].append(timed(tool, cmd, env, work, mail, users, expected,
                                               timeout, dc))
            for n in range(repeat):
                log(f"repeat {rep + 1}: {tool} no-op {n + 1}")
                runs[tool]["noop"].append(timed(tool, cmd, env, work, mail, users, expected,
                                                timeout, dc))
            shutil.rmtree(work, ignore_errors=True)
            for user in users:
                shutil.rmtree(dc.home(user), ignore_errors=True)
    out: dict = {"accounts": accounts, "messages_per_account": messages, "tools": {}}
    for tool, scenarios in runs.items():
        out["tools"][tool] = {
            sc: {"median_s": statistics.median(m.wall for m in ms),
                 "min_s": min(m.wall for m in ms), "max_s": max(m.wall for m in ms),
                 "peak_rss_mb": max(m.rss_kb for m in ms) / 1024,
                 "cpu_s": statistics.median(m.tool_cpu for m in ms),
                 "server_cpu_s": statistics.median(m.server_cpu for m in ms),
                 "others_cpu_s": statistics.median(m.foreign_cpu for m in ms),
                 "runs": len(ms)}
            for sc, ms in scenarios.items()}
    for sc in ("initial", "noop"):
        out[f"{sc}_ratio"] = (out["tools"]["mailsync"][sc]["median_s"]
                              / out["tools"]["mbsync"][sc]["median_s"])
    out["mailsync_peak_rss_mb"] = max(out["tools"]["mailsync"][sc]["peak_rss_mb"]
                                      for sc in ("initial", "noop"))
    return out


def scale(dc: Dovecot, scratch: Path, count: int, repeat: int, jobs: int | None,
          timeout: float) -> dict:
    template, expected = make_template(dc, 20)
    users = clone_users(dc, template, count, "s")
    points = {}
    work = scratch / "scale"
    for n in sorted({min(100, count), count}):
        # The first n users: the accounts of the smaller run are among the larger's.
        cmd, env, mail = mailsync_setup(dc, work, users[:n], jobs)
        log(f"scale: initial sync of {n} accounts (untimed)")
        timed("mailsync", cmd, env, work, mail, users[:n], expected, timeout, dc)
        walls, rss = [], []
        for r in range(repeat):
            log(f"scale: {n} accounts no-op {r + 1}")
            m = timed("mailsync", cmd, env, work, mail, users[:n], expected, timeout, dc)
            walls.append(m.wall)
            rss.append(m.rss_kb / 1024)
        points[n] = {"noop_median_s": statistics.median(walls), "peak_rss_mb": max(rss),
                     "per_account_ms": 1000 * statistics.median(walls) / n}
    small, big = min(points), max(points)
    return {"points": points,
            "time_growth": points[big]["noop_median_s"] / points[small]["noop_median_s"],
            "account_growth": big / small,
            "rss_growth": points[big]["peak_rss_mb"] / points[small]["peak_rss_mb"]}


def install_committed(scratch: Path) -> Path:
    """mailsync as committed (HEAD, `git archive`), installed as bench/imap.py installs
    the checkout: the figures belong to a commit, not to edits in progress."""
    source = scratch / "source"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], capture_output=True,
                             timeout=120, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True, timeout=120)
    original = imapbench.ROOT
    imapbench.ROOT = source
    try:
        return imapbench.install_mailsync(scratch)
    finally:
        imapbench.ROOT = original


def report(result: dict, info: dict) -> str:
    lines = [f"machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}, "
             f"Python {info['python']}, {info['dovecot']}, {info['mbsync']}",
             f"mailsync: {info['mailsync']}"]
    c = result.get("compare")
    if c:
        lines.append(f"{c['accounts']} accounts x {c['messages_per_account']} messages "
                     "(median s, [min-max], peak RSS MB; CPU s of the tool, of Dovecot and "
                     "of everything else on the machine meanwhile):")
        for tool, sc in c["tools"].items():
            for name, r in sc.items():
                lines.append(f"  {tool:9} {name:8} {r['median_s']:8.2f} "
                             f"[{r['min_s']:.2f}-{r['max_s']:.2f}] {r['peak_rss_mb']:7.1f} MB "
                             f"{r['cpu_s']:7.2f} {r['server_cpu_s']:7.2f} "
                             f"{r['others_cpu_s']:7.2f}  ({r['runs']} runs)")
        for sc, target in TARGETS.items():
            ratio = c[f"{sc}_ratio"]
            lines.append(f"{sc}: mailsync/mbsync = {ratio:.2f}x (target <= {target}x): "
                         + ("MET" if ratio <= target else "NOT MET"))
        rss = c["mailsync_peak_rss_mb"]
        lines.append(f"peak RSS of the mailsync run: {rss:.1f} MB (target < "
                     f"{RSS_TARGET_MB:.0f} MB): " + ("MET" if rss < RSS_TARGET_MB else "NOT MET"))
    s = result.get("scale")
    if s:
        for n, p in s["points"].items():
            lines.append(f"scale: {n} accounts no-op {p['noop_median_s']:.2f} s "
                         f"({p['per_account_ms']:.1f} ms per account), peak RSS "
                         f"{p['peak_rss_mb']:.1f} MB")
        lines.append(f"scale: {s['account_growth']:.0f}x the accounts took "
                     f"{s['time_growth']:.2f}x the time and {s['rss_growth']:.2f}x the memory"
                     + (" (time grows no faster than accounts: MET)"
                        if s["time_growth"] <= s["account_growth"] else " (NOT MET)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1000, metavar="N",
                    help="accounts for the no-op scaling run (0: skip it)")
    ap.add_argument("--no-compare", action="store_true", help="only the scaling run")
    ap.add_argument("--jobs", type=int, default=None, help="mailsync --jobs (default: its own)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--output", type=Path, help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    if shutil.which("mbsync") is None and not args.no_compare:
        ap.error("mbsync is not installed (Debian: isync)")

    def stop(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scratch = Path(tempfile.mkdtemp(prefix="mailsync-accountsbench-"))
    scratch.chmod(0o755)
    imapbench.PYCACHE = scratch / "pycache"
    imapbench.QUIET_WAIT = 0
    dc = Dovecot(scratch / "dovecot", mail_max_userip_connections=1000)
    try:
        imapbench.MAILSYNC = install_committed(scratch)
        dc.start()
        info = imapbench.machine_info(dc)
        info["mailsync"] = subprocess.run(   # what was installed: HEAD, never edits
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True,
            text=True, timeout=30).stdout.strip()
        result: dict = {"machine": info}
        if not args.no_compare:
            result["compare"] = compare(dc, scratch, args.accounts, args.messages,
                                        args.repeat, args.jobs, args.timeout)
        if args.scale:
            result["scale"] = scale(dc, scratch, args.scale, args.repeat, args.jobs,
                                    args.timeout)
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 2
    finally:
        dc.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else report(result, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
