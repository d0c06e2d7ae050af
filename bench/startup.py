"""Start-up time: what a command costs before it talks to any server.

    .venv/bin/python bench/startup.py [--repeat 40]

Runs each probe `--repeat` times, interleaved (one of each in turn, so a busy moment
of the machine falls on all of them alike), and prints the median and the fastest
wall time and the median CPU time (user + system, the steadier figure on a shared
machine) in milliseconds:

* ``version``: the installed command, ``mailsync --version`` (interpreter start,
  click, the exit);
* ``status``: ``mailsync -c CONFIG status`` for one IMAP account that has never run
  (the config read, the state looked up, a table printed; no server);
* ``imap import``: ``python -c "from mailsync.drivers import imap"``, the IMAP driver and
  imapclient as a sync loads them, imapclient's version read from its dist-info
  folder's name (mailsync/imap/imapclient_version.py);
* ``imap import, metadata``: the same after ``import imapclient`` first, so that
  imapclient reads its version through importlib.metadata as it does by itself: the
  difference to the line above is what the stand-in buys.

Exit status 1 when a probe failed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
COMMAND = str(Path(PYTHON).parent / "mailsync")


def probes(config: Path) -> dict[str, list[str]]:
    return {
        "version": [COMMAND, "--version"],
        "status": [COMMAND, "-c", str(config), "status"],
        "imap import": [PYTHON, "-c", "from mailsync.drivers import imap"],
        "imap import, metadata": [PYTHON, "-c", "import imapclient\nfrom mailsync.drivers import imap"],
    }


def write_config(folder: Path) -> Path:
    config = folder / "config.toml"
    config.write_text(f'[accounts.bench]\nprotocol = "imap"\nhost = "localhost"\n'
                      f'user = "bench"\npassword = "x"\nmaildir = "{folder / "Mail"}"\n'
                      f'state_dir = "{folder / "state"}"\n')
    config.chmod(0o600)
    return config


def run_once(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall, cpu) seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-300:]}")
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        runs = probes(write_config(Path(tmp)))
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        try:
            for name, cmd in runs.items():      # warm the page cache and .pyc files
                run_once(cmd, env)
            for _ in range(args.repeat):
                for name, cmd in runs.items():
                    times[name].append(run_once(cmd, env))
        except RuntimeError as exc:
            print(f"startup: {exc}", file=sys.stderr)
            return 1
    width = max(len(name) for name in times)
    print(f"{'probe':<{width}}  median ms  fastest ms  cpu median ms  (n={args.repeat})")
    for name, values in times.items():
        wall, cpu = [w for w, _ in values], [c for _, c in values]
        print(f"{name:<{width}}  {statistics.median(wall) * 1000:9.1f}  "
              f"{min(wall) * 1000:10.1f}  {statistics.median(cpu) * 1000:13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
