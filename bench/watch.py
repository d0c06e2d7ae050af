"""`mailsync watch` latency and idle cost, against a private Dovecot on loopback.

    python bench/watch.py                       # 100 deliveries, 20 flag changes, 60 s quiet
    python bench/watch.py --deliveries 1000 --flags 0 --gap 0.05 --quiet-seconds 600
    python bench/watch.py --no-notify           # the IDLE path (NOTIFY trimmed off Dovecot)
    python bench/watch.py --deliveries 1000 --keep-server 100 --gap 2 --flags 0
                                                # an hour-long day: INBOX kept at 100

Measured (nothing is timed inside a test; this is the bench issue 14's targets name):

* delivery latency: from the end of an APPEND on the server (a second IMAP client, as
  an MTA's LMTP delivery would end) to the message's file appearing in the Maildir's
  new/ or cur/ (seen through inotify, so the bench itself stays idle while it waits):
  median and p95 over --deliveries, one at a time, --gap seconds apart;
* flag latency: from renaming a local file to add F (as a mail client does) to the
  server reporting \\Flagged (polled every 5 ms on another connection): median, p95;
* idle cost: CPU (user+system of the watch process, /proc/PID/stat) over
  --quiet-seconds with nothing happening, as a share of one core, and its resident
  memory (VmRSS) before and after;
* flat memory: VmRSS after every tenth of the deliveries; the growth from the end of
  the warm-up (--warmup deliveries, 100) to the end of the quiet time, which "flat"
  bounds by --flat-mb (2 MB: what the sqlite page cache and Python's regular-expression
  cache may still fill, both capped, whatever the number of deliveries). A pass holds
  every message of the folder it looks at (about 3.5 KB each), so memory follows the
  size of the largest folder: --keep-server N expunges the oldest messages on the
  server after each delivery (a user who files or deletes mail as it comes), keeping
  INBOX at N, which tells growth with the folder from growth with time;
* the result is verified: the Maildir holds every delivered message once, the server
  every one, the flags set; watch exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402

from tests.dovecot import Dovecot  # noqa: E402
from tests.watchhelp import NO_NOTIFY  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def message(n: int) -> bytes:
    return (f"From: bench@example.org\r\nTo: me@example.org\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench-{n}-{time.time_ns()}@example.org>\r\n\r\n"
            + "A line of text to make the message a little longer than nothing.\r\n" * 20
            ).encode()


def files(maildir: Path) -> list[Path]:
    out = []
    for sub in ("new", "cur"):
        try:
            out += [e for e in os.scandir(maildir / sub)]
        except FileNotFoundError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS     # utime, stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_for(check, timeout: float, interval: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench: not within {timeout:g}s: {what}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def expunged(pusher: IMAPClient, keep: int | None) -> int:
    """With --keep-server: expunge the oldest messages beyond keep; how many."""
    if not keep:
        return 0
    pusher.select_folder("INBOX")
    uids = sorted(pusher.search(["ALL"]))
    old = uids[:max(0, len(uids) - keep)]
    if old:
        pusher.delete_messages(old)
        pusher.expunge()
    return len(old)


def client(server: Dovecot, user: str) -> IMAPClient:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    c = IMAPClient(server.host, port=server.imaps_port, ssl=True, ssl_context=ctx, timeout=30)
    c.login(user, server.password)
    return c


def run(args) -> dict:
    base = Path(tempfile.mkdtemp(prefix="mailsync-bench-watch-"))
    server = Dovecot(extra_config=NO_NOTIFY if args.no_notify else "")
    server.start()
    proc = None
    try:
        user = server.new_user()
        maildir, state = base / "Mail", base / "state"
        config = base / "config.toml"
        config.write_text(
            "[accounts.bench]\nprotocol = \"imap\"\n"
            f"host = \"{server.host}\"\nport = {server.imaps_port}\nuser = \"{user}\"\n"
            f"password = \"{server.password}\"\nca_file = \"{server.ca_file}\"\n"
            f"maildir = \"{maildir}\"\nstate_dir = \"{state}\"\n")
        config.chmod(0o600)
        out = open(base / "watch.out", "wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "mailsync", "-c", str(config), "watch"],
                                stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env)
        status = state / "watch.json"
        wait_for(lambda: status.exists() and "connected" in status.read_text()
                 and json.loads(status.read_text()).get("last_sync"), 60, 0.05,
                 "the watch's first pass")
        time.sleep(1)
        pusher = client(server, user)

        latencies, rss_marks = [], {}
        from mailsync.inotify import IN_CREATE, IN_MOVED_TO, Inotify
        arrivals = Inotify()
        for sub in ("new", "cur"):
            arrivals.add(maildir / sub, IN_CREATE | IN_MOVED_TO)
        for n in range(args.deliveries):
            before = {e.name.split(":2,")[0] for e in files(maildir)}
            arrivals.read_events()
            pusher.append("INBOX", message(n))
            t0 = time.perf_counter()
            deadline = t0 + 60
            while not {e.name.split(":2,")[0] for e in files(maildir)} - before:
                if time.perf_counter() > deadline:
                    raise SystemExit(f"bench: delivery {n} did not arrive within 60 s")
                select.select([arrivals.fd], [], [], 0.5)
                arrivals.read_events()
            latencies.append(time.perf_counter() - t0)
            expunged(pusher, args.keep_server)
            if (n + 1) % max(1, args.deliveries // 10) == 0 or n + 1 in (
                    args.warmup, args.deliveries):
                time.sleep(max(args.gap, 0.3))     # the pass it set off is over
                rss_marks[n + 1] = rss_kb(proc.pid)
            time.sleep(args.gap)

        flag_latencies = []
        time.sleep(1)
        # connected only now: a client idle through a long run is logged out by Dovecot
        pusher.noop()
        checker = client(server, user)
        checker.select_folder("INBOX", readonly=True)
        for n, entry in enumerate(sorted(files(maildir), key=lambda e: e.name)[:args.flags]):
            path = Path(entry.path)
            key = path.name.split(":2,")[0]
            flags = path.name.split(":2,")[1] if ":2," in path.name else ""
            target = maildir / "cur" / f"{key}:2,{''.join(sorted(set(flags + 'F')))}"
            flagged_before = len(checker.search(["FLAGGED"]))
            os.rename(path, target)
            t0 = time.perf_counter()
            wait_for(lambda: checker.noop() is not None and
                     len(checker.search(["FLAGGED"])) > flagged_before, 60, 0.005,
                     f"flag {n}")
            flag_latencies.append(time.perf_counter() - t0)
            time.sleep(args.gap)

        time.sleep(3)   # the last passes settle
        rss_before, cpu_before, t_before = rss_kb(proc.pid), cpu_seconds(proc.pid), \
            time.monotonic()
        time.sleep(args.quiet_seconds)
        cpu_after, t_after, rss_after = cpu_seconds(proc.pid), time.monotonic(), \
            rss_kb(proc.pid)

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        local = len(files(maildir))
        pusher.select_folder("INBOX", readonly=True)
        on_server = len(pusher.search(["ALL"]))
        flagged = len(pusher.search(["FLAGGED"]))
        for c in (pusher, checker):
            c.logout()
        arrivals.close()
        held = min(args.deliveries, args.keep_server or args.deliveries)
        verified = (code == 0 and local == held == on_server
                    and flagged == min(args.flags, held))
        warm = rss_marks.get(min(args.warmup, args.deliveries))
        growth_kb = rss_after - warm if warm is not None else None
        return {
            "path": "IDLE" if args.no_notify else "NOTIFY",
            "deliveries": args.deliveries,
            "kept_on_server": args.keep_server,
            "delivery_latency_s": {"median": statistics.median(latencies),
                                   "p95": percentile(latencies, 95),
                                   "max": max(latencies)},
            "flag_changes": len(flag_latencies),
            "flag_latency_s": {"median": statistics.median(flag_latencies),
                               "p95": percentile(flag_latencies, 95),
                               "max": max(flag_latencies)} if flag_latencies else None,
            "quiet_seconds": round(t_after - t_before, 1),
            "idle_cpu_percent_of_a_core": 100 * (cpu_after - cpu_before) / (t_after - t_before),
            "rss_kb": {"after_deliveries": rss_marks,
                       "after_warmup": warm,
                       "after_all_deliveries": rss_marks.get(args.deliveries),
                       "quiet_start": rss_before, "quiet_end": rss_after},
            "rss_growth_after_warmup_kb": growth_kb,
            "flat_bound_kb": int(args.flat_mb * 1024),
            "memory_flat": growth_kb is not None and growth_kb < args.flat_mb * 1024,
            "exit_code": code, "verified": verified,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_1min": os.getloadavg()[0]},
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
        if not args.keep:
            import shutil
            shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deliveries", type=int, default=100)
    ap.add_argument("--flags", type=int, default=20, help="local flag changes timed")
    ap.add_argument("--gap", type=float, default=0.3,
                    help="seconds between one change's arrival and the next change")
    ap.add_argument("--quiet-seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=int, default=100,
                    help="deliveries before memory is taken as the baseline")
    ap.add_argument("--keep-server", type=int, default=None, metavar="N",
                    help="expunge the oldest server messages after each delivery, "
                         "keeping INBOX at N")
    ap.add_argument("--flat-mb", type=float, default=2.0,
                    help="growth after the warm-up that still counts as flat memory")
    ap.add_argument("--no-notify", action="store_true", help="a Dovecot without NOTIFY")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary Maildir")
    args = ap.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        d, f = result["delivery_latency_s"], result["flag_latency_s"]
        print(f"path: {result['path']}  deliveries: {result['deliveries']}  "
              f"verified: {result['verified']}")
        print(f"delivery -> Maildir: median {d['median']*1000:.0f} ms, "
              f"p95 {d['p95']*1000:.0f} ms, max {d['max']*1000:.0f} ms")
        if f:
            print(f"local flag -> server: median {f['median']*1000:.0f} ms, "
                  f"p95 {f['p95']*1000:.0f} ms, max {f['max']*1000:.0f} ms "
                  f"({result['flag_changes']} changes)")
        r = result["rss_kb"]
        print(f"quiet {result['quiet_seconds']} s: CPU "
              f"{result['idle_cpu_percent_of_a_core']:.3f}% of a core; RSS "
              f"{r['quiet_start']/1024:.1f} -> {r['quiet_end']/1024:.1f} MB")
        print("RSS after deliveries: " + ", ".join(
            f"{n}: {kb/1024:.1f} MB" for n, kb in sorted(r["after_deliveries"].items())))
        growth = result["rss_growth_after_warmup_kb"]
        if growth is not None:
            print(f"memory from the warm-up ({r['after_warmup']/1024:.1f} MB) to the end of "
                  f"the quiet time: {growth/1024:+.2f} MB; flat (under "
                  f"{result['flat_bound_kb']/1024:g} MB): {result['memory_flat']}")
    return 0 if result["verified"] and result["memory_flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
