"""What the machine allows: mbsync beside the least any Python client can do.

    .venv/bin/python bench/floor.py [--messages 10000] [--repeat 3] [--quiet-wait S]

The speed targets of bench/imap.py are ratios to mbsync. This measures, on the same
private Dovecot, corpus and folders (bench/imap.py's), mbsync's three scenarios and
bench/bare_client.py, a Python client with no library but ssl and socket and no
durability at all:

* ``download``: TLS, LOGIN, per folder SELECT and one ``UID FETCH 1:* (UID FLAGS
  BODY.PEEK[])``, every body read and dropped (1 and 2 connections);
* ``write``: the same, each body (CRLF -> LF) written to a new file: no fsync, no
  rename into place, nothing recorded (1 and 2 connections);
* ``login``: Python start, TLS, LOGIN, one LIST-STATUS of every folder, LOGOUT: the
  least a no-op resync can do; ``login+stack``: the same after importing click,
  imapclient, sqlite3 and tomllib (mailsync's required stack), unused.

Each probe runs with ``python -S`` (no site, so no editable-install finder). It
prints the medians and each target next to the fastest probe that bounds it: a
target below its probe cannot be met by any durable Python client on this machine.
Exit status 1 when a run failed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import sysconfig
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imap as bench  # noqa: E402  (bench/imap.py)

HERE = Path(__file__).resolve().parent
PROBE = "import sys, bare_client; bare_client.main(sys.argv[1:])"
LOGINS_PER_REPEAT = 7


def probe(dc, user: str, work: Path, args: list[str], timeout: float) -> bench.Measurement:
    env = bench.ToolSetup(dc, user, work).tool_env()
    env["PYTHONPATH"] = str(HERE)
    env["BENCH_PURELIB"] = sysconfig.get_paths()["purelib"]   # for --stack, run with -S
    mode, rest = args[0], args[1:]
    cmd = [sys.executable, "-S", "-c", PROBE, mode, dc.host, str(dc.imaps_port), user,
           dc.password, str(dc.ca_file), *rest]
    bench.settle_deletes()
    bench.wait_quiet(bench.QUIET_WAIT)
    m = bench.measure(cmd, env, work, timeout, dc)
    if m.returncode != 0:
        raise bench.BenchError(f"bare client {mode} failed:\n{m.output[-2000:]}")
    return m


def run(args) -> tuple[dict[str, list[float]], list[str]]:
    folders = bench.folder_names(args.folders)
    plan = bench.ChangePlan.make(args.messages)
    scratch = Path(tempfile.mkdtemp(prefix="mailsync-floor-"))
    scratch.chmod(0o755)
    bench.PYCACHE = scratch / "pycache"
    dc = bench.Dovecot(scratch / "dovecot")
    times: dict[str, list[float]] = {}
    failures: list[str] = []
    try:
        dc.start()
        corpus = bench.build_corpus(args.messages, len(plan.new), bench.MAX_ATTACHMENT)
        template = bench.seed_template(dc, corpus, args.messages, folders)
        bench.log(f"seeded {args.messages} messages in {len(folders)} folders")
        bench.warm_up(dc, scratch, corpus, folders, ["mbsync"], args.timeout)
        for rep in range(args.repeat):
            try:
                for r in bench.run_tool_once("mbsync", rep, 1, dc, template, scratch, corpus,
                                             args.messages, folders, plan, args.timeout):
                    times.setdefault(f"mbsync {r.scenario}", []).append(r.wall)
                user = bench.clone_user(dc, template)
                work = Path(tempfile.mkdtemp(prefix=f"bare-{rep}-", dir=scratch))
                try:
                    for conns in (1, 2):
                        m = probe(dc, user, work, ["download", "--connections", str(conns)],
                                  args.timeout)
                        _check(m, args.messages)
                        times.setdefault(f"download, {conns} conn", []).append(m.wall)
                        out = work / f"write-{conns}"
                        out.mkdir()
                        m = probe(dc, user, work, ["write", str(out), "--connections",
                                                   str(conns)], args.timeout)
                        _check(m, args.messages)
                        times.setdefault(f"write, {conns} conn", []).append(m.wall)
                    for _ in range(LOGINS_PER_REPEAT):
                        for mode in ("login", "login+stack"):
                            extra = ["--stack"] if mode == "login+stack" else []
                            m = probe(dc, user, work, ["login", *extra], args.timeout)
                            times.setdefault(mode, []).append(m.wall)
                finally:
                    bench.discard_run(work)
                    bench.drop_user(dc, user)
                bench.log(f"repeat {rep + 1}: " + ", ".join(
                    f"{k} {v[-1]:.3f} s" for k, v in times.items()))
            except bench.BenchError as exc:
                failures.append(str(exc))
                bench.log(f"repeat {rep + 1} FAILED: {exc}")
    finally:
        dc.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return times, failures


def _check(m: bench.Measurement, n: int) -> None:
    line = m.output.strip().splitlines()[-1] if m.output.strip() else ""
    if not line.startswith(f"messages={n} "):
        raise bench.BenchError(f"bare client got {line!r}, expected {n} messages")


def report(times: dict[str, list[float]]) -> list[str]:
    med = {k: statistics.median(v) for k, v in times.items()}
    lines = [f"{'probe':<22} {'median s':>9} {'min s':>9} {'runs':>5}"]
    lines += [f"{k:<22} {v:9.3f} {min(times[k]):9.3f} {len(times[k]):>5}"
              for k, v in med.items()]
    lines.append("")
    t = bench.TARGETS
    if "mbsync initial" in med and "write, 1 conn" in med:
        best = min(med["write, 1 conn"], med["write, 2 conn"])
        fetch = min(med["download, 1 conn"], med["download, 2 conn"])
        base = med["mbsync initial"]
        lines.append(f"initial: target {t['initial']}x mbsync = {t['initial'] * base:.2f} s; "
                     f"bare download alone {fetch:.2f} s, bare download + write (not "
                     f"durable) {best:.2f} s = {best / base:.2f}x mbsync")
    if "mbsync noop" in med and "login" in med:
        base = med["mbsync noop"]
        lines.append(f"no-op: target {t['noop']}x mbsync = {t['noop'] * base:.3f} s; Python "
                     f"login + LIST-STATUS {med['login']:.3f} s = {med['login'] / base:.2f}x, "
                     f"with the stack imported {med['login+stack']:.3f} s = "
                     f"{med['login+stack'] / base:.2f}x mbsync")
    if "mbsync change" in med and "login" in med:
        base = med["mbsync change"]
        lines.append(f"1% change: target {t['change']}x mbsync = {t['change'] * base:.3f} s; "
                     f"the no-op floors above are {med['login'] / base:.2f}x and "
                     f"{med['login+stack'] / base:.2f}x mbsync's change resync")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--folders", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--quiet-wait", type=float, default=bench.QUIET_WAIT, metavar="SECONDS")
    args = ap.parse_args(argv)
    if shutil.which("mbsync") is None:
        ap.error("not installed: mbsync")
    bench.QUIET_WAIT = args.quiet_wait

    def stop(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    times, failures = run(args)
    print()
    for line in report(times):
        print(line)
    for f in failures:
        print(f"FAILED: {f[:500]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
