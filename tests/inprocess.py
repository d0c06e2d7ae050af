"""`mailsync ARGS` in the test's own process: for CLI tests whose point is the output and
the exit status, not the process (a separate process costs ~0.1 s of interpreter start
and imports per call).

run_in_process goes through mailsync.cli.app.main, so the error mapping and exit statuses
are the command's own; click's CliRunner isolates the standard streams (never a
terminal), stdin (empty) and the environment (no MAILSYNC_* variables, as run_cli).
Tests where the process is the point (signals, the exit status the OS sees, the entry
point, what a fresh interpreter imports, a terminal) use run_cli or their own process.
"""

from __future__ import annotations

import os
import signal

from click.testing import CliRunner

from mailsync import stopping
from mailsync.cli.app import main
from tests.conftest import CliResult


def run_in_process(*args: str, env: dict | None = None) -> CliResult:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MAILSYNC_")}
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with CliRunner().isolation(env={**unset, **(env or {})}) as (out, err, _):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            return CliResult(code, out.getvalue().decode(), err.getvalue().decode())
    finally:
        for sig, handler in handlers.items():     # run/fetch install their own
            signal.signal(sig, handler)
        stopping.reset()
