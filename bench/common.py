"""Shared pieces of the POP3 benchmarks (bench/pop3.py, bench/pop3_memory.py).

Each tool (mailsync, mpop, getmail6) is run once as a separate process tree
against a private Dovecot (tests/dovecot.py) over POP3 with implicit TLS on
loopback, verifying the server certificate with the test CA, downloading every
message into a fresh local Maildir and deleting it on the server.

Measured per run:

* wall seconds: ``time.perf_counter()`` around the whole tool process (start-up,
  TLS, login, transfer, delivery, DELE, QUIT and the server's expunge);
* CPU seconds: user + system time of the tool and the descendants it waited
  for (same source as the RSS below);
* peak RSS: ``/usr/bin/time -f %M`` (GNU time: ``ru_maxrss`` from ``wait4()``
  of the tool, i.e. the largest resident set of the tool process or of any
  descendant it waited for -- the max over the tree, not the sum).  Without
  /usr/bin/time, a fresh helper Python process runs the tool and reports its
  ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, which is the same number
  for that one tool.

Nothing is reported before the result is verified: the local Maildir must hold
exactly the corpus (same count, every message byte-equal after CRLF -> LF and
after removing the header lines the tool itself adds) and the server mailbox
must be empty.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.corpus import corpus_stats, make_corpus  # noqa: E402
from tests.dovecot import Dovecot  # noqa: E402

GNU_TIME = "/usr/bin/time"
TOOLS = ("mailsync", "mpop", "getmail6")
DEFAULT_TIMEOUT = 600.0
MB = 1024 * 1024


class BenchError(RuntimeError):
    """A run failed or its result did not verify: no time is reported for it."""


# --------------------------------------------------------------------------
# the corpus and verification
# --------------------------------------------------------------------------

def normalise(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def split_fields(data: bytes) -> tuple[list[bytes], bytes]:
    """(header fields with their continuation lines, rest from the blank line on)."""
    end = data.find(b"\n\n")
    head, rest = (data, b"") if end < 0 else (data[:end], data[end + 1:])
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields, rest


def join_fields(fields: list[bytes], rest: bytes) -> bytes:
    return b"\n".join(fields) + b"\n" + rest if rest else b"\n".join(fields)


def _is(field_: bytes, name: bytes) -> bool:
    return field_[:len(name) + 1].lower() == name.lower() + b":"


def strip_added(tool: str, data: bytes) -> bytes:
    """The message as the server sent it, minus the header lines *tool* adds on top.

    mpop prepends one ``Received:`` field (received_header is on by default);
    getmail6 prepends ``Return-Path:``, ``Delivered-To:`` and ``Received:`` (and
    removes the message's own Return-Path: see expected_for()).  mailsync adds
    nothing.
    """
    data = normalise(data)
    if tool == "mailsync":
        return data
    fields, rest = split_fields(data)
    if tool == "mpop":
        if fields and _is(fields[0], b"Received"):
            fields = fields[1:]
    elif tool == "getmail6":
        for name in (b"Return-Path", b"Delivered-To", b"Received"):
            if fields and _is(fields[0], name):
                fields = fields[1:]
    return join_fields(fields, rest)


_WS = re.compile(rb"[ \t\n]+")


def _refold_tolerant(data: bytes) -> bytes:
    """Header fields unfolded with whitespace runs collapsed; the body untouched."""
    fields, rest = split_fields(data)
    return join_fields([_WS.sub(b" ", f).strip() for f in fields], rest)


def comparable(tool: str, stored: bytes) -> bytes:
    """A stored message as compared with expected_for(): strip_added(), and for
    getmail6 also header whitespace normalised.

    getmail6 parses every message with Python's email package and writes it out
    again, which re-folds some header fields (e.g. ``Subject: =?utf-8?q?...``
    becomes ``Subject:\n =?utf-8?q?...``); the body stays byte-identical.
    """
    data = strip_added(tool, stored)
    return _refold_tolerant(data) if tool == "getmail6" else data


def expected_for(tool: str, original: bytes) -> bytes:
    """What comparable(tool, stored) must equal for the corpus message *original*."""
    if tool != "getmail6":
        return original
    # getmail6 deletes the message's own Return-Path: fields and writes its own.
    fields, rest = split_fields(original)
    return _refold_tolerant(join_fields([f for f in fields if not _is(f, b"Return-Path")], rest))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_INDEX_RE = re.compile(rb"^X-Corpus-Index: (\d+)$", re.MULTILINE)


def maildir_files(maildir: Path) -> list[Path]:
    out = []
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    return out


def verify(tool: str, corpus: list[bytes], maildir: Path, dc: Dovecot, user: str) -> dict:
    """Raise BenchError unless the Maildir holds exactly *corpus* and the server is empty."""
    expected: dict[str, list[bytes]] = collections.defaultdict(list)
    for msg in corpus:
        exp = expected_for(tool, msg)
        expected[_digest(exp)].append(exp)
    files = maildir_files(maildir)
    problems: list[str] = []
    if len(files) != len(corpus):
        problems.append(f"{len(files)} messages in the Maildir, expected {len(corpus)}")
    unexpected = 0
    for path in files:
        got = comparable(tool, path.read_bytes())
        bucket = expected.get(_digest(got))
        if bucket and bucket[-1] == got:  # compare the bytes themselves, not just the hash
            bucket.pop()
            continue
        unexpected += 1
        if unexpected <= 3:
            m = _INDEX_RE.search(got)
            idx = int(m.group(1)) if m else None
            detail = ""
            if idx is not None and 0 <= idx < len(corpus):
                want = expected_for(tool, corpus[idx])
                pos = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                           min(len(got), len(want)))
                detail = (f" (corpus #{idx}: first difference at byte {pos}: "
                          f"got {got[max(0, pos - 40):pos + 40]!r}, "
                          f"want {want[max(0, pos - 40):pos + 40]!r})")
            problems.append(f"{path.name}: not a corpus message{detail}")
    missing = sum(len(v) for v in expected.values())
    if unexpected:
        problems.append(f"{unexpected} local messages do not match the corpus")
    if missing:
        problems.append(f"{missing} corpus messages are missing locally")
    left = len(dc.server_messages(user))
    if left:
        problems.append(f"{left} messages are still on the server")
    if problems:
        raise BenchError(f"{tool}: result does not verify: " + "; ".join(problems))
    return {"messages": len(files), "server_left": left}


# --------------------------------------------------------------------------
# running one tool under measurement
# --------------------------------------------------------------------------

def rss_method() -> str:
    return "gnu-time" if os.access(GNU_TIME, os.X_OK) else "rusage-children"


_RUSAGE_HELPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1] + '.out', 'wb'),"
    " stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(f'{ru.ru_maxrss} {ru.ru_utime} {ru.ru_stime}')\n"
    "sys.exit(rc)\n"
)


@dataclass
class Measurement:
    wall: float
    rss_kb: int
    cpu: float  # user + system seconds
    returncode: int
    output: str


def wait_exact(proc: subprocess.Popen, timeout: float) -> int:
    """proc.wait(timeout), but on time: Popen.wait with a timeout polls, sleeping up
    to 50 ms between looks, so a run of 51 ms was reported as 63.5 ms and one of
    65 ms as 113.5 ms. This blocks in waitpid instead and returns when the process
    ends; a timer kills the process's session (start_new_session=True) on timeout."""
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        rc = proc.wait()
    finally:
        timer.cancel()
    if fired.is_set():
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return rc


def measure(cmd: list[str], *, env: dict | None = None, cwd: Path | None = None,
            timeout: float = DEFAULT_TIMEOUT, workdir: Path, label: str = "") -> Measurement:
    """Run *cmd* once as its own process tree; wall seconds and peak RSS (KiB)."""
    rss_file = workdir / "rss.txt"
    out_file = workdir / "output.txt"
    if rss_method() == "gnu-time":
        full = [GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file), *cmd]
    else:
        full = [sys.executable, "-c", _RUSAGE_HELPER, str(rss_file), *cmd]
    with open(out_file, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(full, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = wait_exact(proc, timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{label or cmd[0]} did not finish within {timeout:g} s "
                             "(killed)") from None
        wall = time.perf_counter() - start
    output = out_file.read_bytes().decode(errors="replace")
    if rss_method() != "gnu-time" and Path(str(rss_file) + ".out").exists():
        output += Path(str(rss_file) + ".out").read_bytes().decode(errors="replace")
    try:
        # GNU time writes "Command exited with non-zero status N" first on failure
        rss, user, system = rss_file.read_text().strip().splitlines()[-1].split()
        rss_kb, cpu = int(rss), float(user) + float(system)
    except (OSError, ValueError, IndexError):
        rss_kb, cpu = -1, -1.0
    return Measurement(wall, rss_kb, cpu, rc, output)


def _private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def mailsync_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def mailsync_config(dc: Dovecot, user: str, work: Path, timeout: float = 60) -> tuple[Path, Path]:
    """Write a mailsync config for *user*; (config path, maildir)."""
    maildir = work / "Maildir"
    keys = {"protocol": "pop3", "host": dc.host, "port": dc.pop3s_port, "user": user,
            "password": dc.password, "ca_file": str(dc.ca_file), "maildir": str(maildir),
            "state_dir": str(work / "state"), "timeout": timeout}
    lines = ["[accounts.bench]"] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    return _private_file(work / "config.toml", "\n".join(lines) + "\n"), maildir


def mailsync_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "mailsync", "-c", str(config), "--no-progress", "fetch"]


def setup_mailsync(dc: Dovecot, user: str, work: Path):
    config, maildir = mailsync_config(dc, user, work)
    return mailsync_command(config), mailsync_env(), maildir


def setup_mpop(dc: Dovecot, user: str, work: Path):
    maildir = _make_maildir(work / "Maildir")  # mpop does not create it
    rc = _private_file(work / "mpoprc", f"""\
defaults
timeout 60

account bench
host {dc.host}
port {dc.pop3s_port}
tls on
tls_starttls off
tls_trust_file {dc.ca_file}
auth user
user {user}
password {dc.password}
delivery maildir {maildir}
keep off
uidls_file {work / 'mpop_uidls'}
""")
    return ["mpop", "-C", str(rc), "-q", "bench"], None, maildir


def _drop_root_prefix(work: Path) -> tuple[list[str], dict | None]:
    """getmail6 refuses to deliver into a Maildir as root (its Maildir destination
    forks a child per message and that child must not be root).  When we are root,
    run getmail as nobody:nogroup -- the way a user runs it, as themselves -- via
    setpriv (it execs, so /usr/bin/time still measures getmail itself)."""
    if os.geteuid() != 0:
        return [], None
    import grp
    import pwd
    uid = pwd.getpwnam("nobody").pw_uid
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        gid = grp.getgrnam("nobody").gr_gid
    work.parent.chmod(0o711)  # the scratch dir: traversable, not listable
    for dirpath, dirnames, filenames in os.walk(work):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)
    env = {k: v for k, v in os.environ.items()}
    env.update(HOME=str(work), USER="nobody", LOGNAME="nobody")
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"], env


def setup_getmail(dc: Dovecot, user: str, work: Path):
    maildir = _make_maildir(work / "Maildir")  # getmail does not create it either
    gmdir = work / "getmail"
    gmdir.mkdir()
    rc = _private_file(gmdir / "getmailrc", f"""\
[retriever]
type = SimplePOP3SSLRetriever
server = {dc.host}
port = {dc.pop3s_port}
username = {user}
password = {dc.password}
ca_certs = {dc.ca_file}
# also how long getmail waits for a delivery child: see README (getmail6 race)
timeout = 60

[destination]
type = Maildir
path = {maildir}/

[options]
delete = true
read_all = true
verbose = 0
""")
    prefix, env = _drop_root_prefix(work)
    return [*prefix, "getmail", f"--getmaildir={gmdir}", f"--rcfile={rc}", "--quiet"], env, maildir


SETUP = {"mailsync": setup_mailsync, "mpop": setup_mpop, "getmail6": setup_getmail}


@dataclass
class Run:
    tool: str
    repeat: int
    wall: float
    cpu: float
    rss_mb: float
    messages: int
    load: float = -1.0  # 1-min load average right after the run


def run_tool(tool: str, dc: Dovecot, corpus: list[bytes], scratch: Path, *,
             repeat: int = 0, timeout: float = DEFAULT_TIMEOUT) -> Run:
    """Seed a fresh user with *corpus*, run *tool* once, verify, clean up."""
    user = dc.new_user()
    dc.seed(user, corpus)
    work = Path(tempfile.mkdtemp(prefix=f"{tool}-", dir=scratch))
    try:
        cmd, env, maildir = SETUP[tool](dc, user, work)
        m = measure(cmd, env=env, cwd=ROOT, timeout=timeout, workdir=work, label=tool)
        if m.returncode != 0:
            raise BenchError(f"{tool} exited with status {m.returncode}:\n{m.output[-3000:]}")
        checked = verify(tool, corpus, maildir, dc, user)
        return Run(tool, repeat, m.wall, m.cpu, m.rss_kb / 1024, checked["messages"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dc.home(user), ignore_errors=True)


# --------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------

def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
        text = (out.stdout or out.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(dc: Dovecot | None = None) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dovecot": _first_line([dc.binary if dc else "dovecot", "--version"]),
        "mpop": _first_line(["mpop", "--version"]),
        "getmail": _first_line(["getmail", "--version"]),
        "rss_method": rss_method(),
    }


def loadavg() -> float:
    """1-minute load average (other work on this machine skews every timing)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def wait_quiet(threshold: float, max_wait: float, log) -> float:
    """Wait (at most max_wait s) until the 1-min load average is below threshold."""
    deadline = time.monotonic() + max_wait
    load = loadavg()
    if load >= threshold and max_wait > 0:
        log(f"load average {load:.2f} >= {threshold}: waiting up to {max_wait:.0f} s "
            "for the machine to go quiet")
    while load >= threshold and time.monotonic() < deadline:
        time.sleep(5)
        load = loadavg()
    return load


def build_corpus(n: int) -> tuple[list[bytes], dict]:
    corpus = make_corpus(n, big=True)
    return corpus, corpus_stats(corpus)


def scratch_dir() -> Path:
    # Like the Dovecot fixture: a directory of our own under /tmp (same file system
    # as the server's Maildirs).
    return Path(tempfile.mkdtemp(prefix="mailsync-bench-"))


def as_dicts(runs: list[Run]) -> list[dict]:
    return [asdict(r) for r in runs]


__all__ = ["BenchError", "Dovecot", "MB", "Run", "TOOLS", "build_corpus", "machine_info",
           "run_tool", "scratch_dir", "as_dicts", "verify", "measure"]
