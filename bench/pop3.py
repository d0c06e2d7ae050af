"""POP3 download-then-delete benchmark: mailsync against mpop and getmail6.

    python bench/pop3.py [--messages 2000] [--repeat 3] [--json]

Starts a private Dovecot (tests/dovecot.py), builds the corpus once
(tests.corpus.make_corpus(n, big=True): 2,000 messages ~ 170 MB, a few with
several-MB attachments), then for each repeat and each tool in interleaved
order (the starting tool rotates every repeat) seeds a fresh user with the
corpus, runs the tool once (POP3, implicit TLS on loopback, certificate checked
against the test CA, everything downloaded into a new Maildir and deleted on the
server), verifies the result and records wall seconds and peak RSS.  See
bench/common.py and bench/README.md for what exactly is measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DEFAULT_TIMEOUT, TOOLS, BenchError, Dovecot, as_dicts,  # noqa: E402
                    build_corpus, loadavg, machine_info, run_tool, scratch_dir,
                    wait_quiet)


def summarise(runs, tools=TOOLS) -> dict:
    out = {}
    for tool in tools:
        walls = [r.wall for r in runs if r.tool == tool]
        rss = [r.rss_mb for r in runs if r.tool == tool]
        cpu = [r.cpu for r in runs if r.tool == tool]
        if walls:
            out[tool] = {"median": statistics.median(walls), "min": min(walls),
                         "max": max(walls), "cpu_median": statistics.median(cpu),
                         "rss_mb": statistics.median(rss),
                         "rss_mb_max": max(rss), "runs": len(walls)}
    base = out.get("mpop", {}).get("median")
    for row in out.values():
        row["ratio_to_mpop"] = row["median"] / base if base else None
    return out


def table(summary: dict) -> str:
    lines = [f"{'tool':<10} {'median s':>9} {'min s':>8} {'max s':>8} {'x mpop':>7} "
             f"{'peak RSS MB':>12} {'CPU s':>7}"]
    for tool, r in summary.items():
        ratio = f"{r['ratio_to_mpop']:.2f}x" if r["ratio_to_mpop"] else "-"
        lines.append(f"{tool:<10} {r['median']:>9.2f} {r['min']:>8.2f} {r['max']:>8.2f} "
                     f"{ratio:>7} {r['rss_mb']:>12.1f} {r['cpu_median']:>7.2f}")
    return "\n".join(lines)


def verdict(summary: dict) -> str:
    if "mailsync" not in summary or "mpop" not in summary:
        return "mailsync/mpop = n/a (a tool did not complete)"
    return f"mailsync/mpop = {summary['mailsync']['ratio_to_mpop']:.2f}x (target <= 1.0x)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="seconds one tool run may take (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--retries", type=int, default=1,
                    help="run a failed mpop/getmail6 run again this many times (default "
                         "%(default)s; every failure is still listed; mailsync runs are "
                         "never retried)")
    ap.add_argument("--quiet-load", type=float, default=1.0, metavar="LOAD",
                    help="before starting, wait until the 1-min load average is below "
                         "LOAD (default %(default)s)")
    ap.add_argument("--quiet-wait", type=float, default=0, metavar="SECONDS",
                    help="wait at most this long for --quiet-load (default 0: don't wait, "
                         "only warn)")
    args = ap.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tool(s): {', '.join(sorted(unknown))}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    corpus, stats = build_corpus(args.messages)
    log(f"corpus: {stats['count']} messages, {stats['total_bytes'] / 1e6:.1f} MB, "
        f"largest {stats['max'] / 1e6:.1f} MB, {stats['with_attachment']} with attachments")
    load_start = wait_quiet(args.quiet_load, args.quiet_wait, log)
    scratch = scratch_dir()
    runs, failures = [], []
    dc = Dovecot()
    try:
        dc.start()
        info = machine_info(dc)
        for rep in range(args.repeat):
            order = tools[rep % len(tools):] + tools[:rep % len(tools)]
            for tool in order:
                tries = 1 if tool == "mailsync" else 1 + max(0, args.retries)
                for attempt in range(tries):
                    try:
                        run = run_tool(tool, dc, corpus, scratch, repeat=rep,
                                       timeout=args.timeout)
                        break
                    except BenchError as exc:
                        run = None
                        final = attempt == tries - 1
                        failures.append({"tool": tool, "repeat": rep, "error": str(exc),
                                         "retried": not final})
                        log(f"repeat {rep + 1}/{args.repeat} {tool:<9} FAILED"
                            f"{'' if final else ' (will retry)'}: {exc}")
                if run is None:
                    continue
                run.load = loadavg()
                runs.append(run)
                log(f"repeat {rep + 1}/{args.repeat} {tool:<9} {run.wall:7.2f} s "
                    f"{run.rss_mb:7.1f} MB  {run.cpu:6.2f} s CPU  verified {run.messages} messages, server empty")
    finally:
        dc.stop()  # SIGTERM by pid, children too
        shutil.rmtree(scratch, ignore_errors=True)

    load_end = loadavg()
    busy = load_start >= args.quiet_load or load_end >= args.quiet_load + 1
    warning = (f"WARNING: the machine was busy (1-min load average {load_start:.2f} at "
               f"the start, {load_end:.2f} at the end): other processes competed for the "
               "CPUs and the disk, timings are skewed" if busy else "")
    summary = summarise(runs, [t for t in tools])
    if args.json:
        print(json.dumps({"corpus": stats, "machine": info, "repeat": args.repeat,
                          "summary": summary, "runs": as_dicts(runs),
                          "failures": failures, "verdict": verdict(summary),
                          "load_start": load_start, "load_end": load_end,
                          "warning": warning}, indent=2))
    else:
        print()
        print(table(summary))
        print(verdict(summary))
        print(f"(peak RSS via {info['rss_method']}; {info['nproc']} CPUs, {info['cpu']}, "
              f"Python {info['python']}, Dovecot {info['dovecot']})")
        if warning:
            print(warning)
    return 1 if any(not f["retried"] for f in failures) else 0


if __name__ == "__main__":
    sys.exit(main())
