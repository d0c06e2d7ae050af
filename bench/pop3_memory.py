"""Peak memory of one mailsync POP3 fetch of the big corpus.

    python bench/pop3_memory.py [--messages 2000] [--limit-mb 80] [--json]

Acceptance: "fetching 2,000 messages of which some are several MB keeps peak
RSS under 80 MB".  Starts a private Dovecot, seeds a fresh user with
make_corpus(n, big=True), runs ``python -m mailsync -c CONFIG --no-progress
fetch`` once, verifies the Maildir holds exactly the corpus and the server is
empty, then prints the peak RSS (see bench/common.py) and PASS or FAIL.
Exit status: 0 PASS, 1 FAIL, 2 the run itself failed or did not verify.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DEFAULT_TIMEOUT, BenchError, Dovecot, build_corpus,  # noqa: E402
                    machine_info, run_tool, scratch_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--limit-mb", type=float, default=80.0)
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    corpus, stats = build_corpus(args.messages)
    scratch = scratch_dir()
    dc = Dovecot()
    try:
        dc.start()
        info = machine_info(dc)
        try:
            run = run_tool("mailsync", dc, corpus, scratch, timeout=args.timeout)
        except BenchError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 2
    finally:
        dc.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    del corpus

    ok = 0 < run.rss_mb < args.limit_mb
    if args.json:
        print(json.dumps({"corpus": stats, "machine": info, "wall": run.wall,
                          "peak_rss_mb": run.rss_mb, "limit_mb": args.limit_mb,
                          "pass": ok}, indent=2))
    else:
        print(f"corpus: {stats['count']} messages, {stats['total_bytes'] / 1e6:.1f} MB, "
              f"largest {stats['max'] / 1e6:.1f} MB")
        print(f"mailsync fetch: {run.wall:.2f} s, verified {run.messages} messages, "
              "server empty")
        print(f"peak RSS: {run.rss_mb:.1f} MB (via {info['rss_method']})")
        print(f"{'PASS' if ok else 'FAIL'}: peak RSS {run.rss_mb:.1f} MB "
              f"{'<' if ok else '>='} {args.limit_mb:g} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
