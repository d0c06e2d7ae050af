"""IMAP two-way sync benchmark: mailsync against mbsync (isync) and offlineimap.

    .venv/bin/python bench/imap.py [--messages 10000] [--folders 5] [--repeat 3]
                                   [--tools mailsync,mbsync,offlineimap] [--json]
    .venv/bin/python bench/imap.py --scale-check [--messages 10000] [--repeat 3]
    .venv/bin/python bench/imap.py --profile [--messages 10000] [--profile-dir DIR]

Starts a private Dovecot (tests/dovecot.py) on loopback and builds one
deterministic corpus (tests.corpus.make_corpus(n, max_attachment=1.5 MiB): most
messages 2-20 KB, ~10 % with a base64 attachment of up to ~2 MB on the wire),
spread over --folders folders with Maildir flags (~30 % \\Seen, ~5 % \\Flagged,
a few \\Answered).  The corpus is written once into a template Maildir inside
the server's home tree; every tool run gets a fresh server user whose Maildir is
a hard-linked copy of that template (``cp -al``: Dovecot only ever renames or
unlinks message files, so the template is never changed).

For each repeat, and each tool in interleaved order (the first tool rotates
every repeat), one fresh user and one empty local Maildir, three timed runs:

1. ``initial``: first sync into the empty Maildir;
2. ``noop``:    the same command again, nothing changed anywhere;
3. ``change``:  after ~1 % change, made identically for every tool: 0.33 % new
   messages APPENDed on the server, 0.33 % flag changes (\\Seen and \\Flagged
   toggled) on the server, 0.33 % expunged on the server, and 0.1 % local flag
   changes (\\Flagged toggled by renaming the Maildir file) -- always the same
   corpus messages (seeded random choice).

Wall seconds are ``time.perf_counter()`` around the whole tool process.  Peak
RSS is ``/usr/bin/time -f %M`` (``ru_maxrss`` from ``wait4()``: the largest
resident set of the tool or of any descendant it waited for); without
/usr/bin/time a fresh helper Python runs the tool and reports
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the same number).  The tool's CPU
seconds (user + system, same source), our Dovecot's CPU seconds (/proc) and the
CPU seconds everything else on the machine used meanwhile (/proc/stat) are
recorded too; a run where other work used more than 15 % of a CPU is marked
"disturbed" and the tool's three scenarios are run again (--retries).

Before every timed run (untimed): wait until no local Maildir directory was
modified in the last 2 s (mbsync 1.4 otherwise sleeps a second: a user does not
resync within the same second), sync(2) the file systems, and wait (at most
--quiet-wait s) for the machine to be quiet.  Before the first repeat every
tool does one untimed initial sync and resync of a 50-message mailbox (warm
page cache and bytecode).  The Python tools run without this sandbox's
PYTHONDONTWRITEBYTECODE and with PYTHONPYCACHEPREFIX in the scratch
directory, so, as on a normal installation, they do not recompile their
modules on every start; mailsync runs as installed by `pip install` from this
checkout into a virtualenv in the scratch directory (its console script), not
as the editable development install.

No time is reported for a run that does not verify: after every run the local
Maildir and the server's Maildir (read on disk) must both hold exactly the
expected messages per folder (identified by their X-Corpus-Index header) with
the expected flags (D F P R S), no duplicates, no extra folders, and a sample
of ~50 messages (plus every newly appended one) must be byte-identical between
server and local copy after CRLF -> LF and after removing the header lines a
tool adds to messages it uploads (mbsync X-TUID, offlineimap X-OfflineIMAP).

``--scale-check`` runs only mailsync: initial sync then ``--repeat`` no-op
resyncs, once with N = --messages and once with 5N messages (small-attachment
corpus, since a no-op resync transfers no bodies), and prints the ratio of the
no-op medians (target <= 1.5x).  ``--profile`` runs mailsync's initial sync, a
no-op resync and the 1 % change resync of the benchmark corpus under cProfile and prints the top
functions by cumulative and by own time.

Everything runs under timeouts; Dovecot is stopped by pid and the scratch
directory is removed at the end.  See bench/imap_README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.corpus import corpus_stats, make_corpus  # noqa: E402
from tests.dovecot import Dovecot  # noqa: E402
from bench.common import GNU_TIME, _private_file, rss_method, wait_exact  # noqa: E402

TOOLS = ("mailsync", "mbsync", "offlineimap")
SCENARIOS = ("initial", "noop", "change")
BASELINE = "mbsync"
KB, MB = 1024, 1024 * 1024
MAX_ATTACHMENT = 1536 * KB          # raw; base64 on the wire: ~2.0 MB
FOLDER_NAMES = ("Archive", "Projects", "Lists", "Receipts", "Travel", "Family", "Newsletters",
                "Support", "Reports", "Old")
LETTER_TO_FLAG = {"S": b"\\Seen", "R": b"\\Answered", "F": b"\\Flagged", "D": b"\\Draft",
                  "P": b"$Forwarded"}
COMPARED_FLAGS = "DFPRS"
SAMPLE = 50
TARGETS = {"initial": 0.35, "noop": 1.0, "change": 0.5}
RSS_TARGET_MB = 64.0
SCALE_TARGET = 1.5
QUIET_BUSY = 0.15          # machine "quiet" below this share of all CPUs busy
FOREIGN_SHARE = 0.15       # a run is disturbed if others used more than 15 % of a CPU
FOREIGN_SLACK = 0.05       # ... plus 50 ms
QUIET_WAIT = 60.0          # seconds to wait for quiet before a timed run (--quiet-wait)


class BenchError(RuntimeError):
    """A run failed or did not verify: no time is reported for it."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr if _JSON else sys.stdout, flush=True)


_JSON = False
PYCACHE: Path | None = None      # PYTHONPYCACHEPREFIX for the Python tools (set in main)
MAILSYNC: Path | None = None     # the installed command (install_mailsync, in main)


# ---------------------------------------------------------------------------------------
# the corpus and its deterministic layout
# ---------------------------------------------------------------------------------------

def folder_names(count: int) -> list[str]:
    if count < 1:
        raise ValueError("--folders must be at least 1")
    extra = list(FOLDER_NAMES[:count - 1])
    extra += [f"Folder{k:02d}" for k in range(len(extra) + 1, count)]
    return ["INBOX", *extra]


def folder_of(i: int, folders: list[str]) -> str:
    """INBOX gets ~40 %, the other folders share the rest evenly."""
    if len(folders) == 1:
        return folders[0]
    rng = random.Random(f"imap-bench-folder:{i}")
    if rng.random() < 0.40:
        return folders[0]
    return folders[1 + int(rng.random() * (len(folders) - 1))]


def flags_of(i: int) -> str:
    """~30 % \\Seen (a tenth of them also \\Answered), ~5 % \\Flagged."""
    rng = random.Random(f"imap-bench-flags:{i}")
    seen, flagged, answered = rng.random() < 0.30, rng.random() < 0.05, rng.random() < 0.10
    return "".join(sorted(("S" if seen else "") + ("F" if flagged else "")
                          + ("R" if seen and answered else "")))


Model = dict  # folder -> {corpus index: flag letters (sorted)}


def initial_model(n: int, folders: list[str]) -> Model:
    model: Model = {f: {} for f in folders}
    for i in range(n):
        model[folder_of(i, folders)][i] = flags_of(i)
    return model


@dataclass
class ChangePlan:
    """The ~1 % change applied before the ``change`` scenario (same for every tool)."""
    expunge: list[int]
    server_flags: list[int]
    local_flags: list[int]
    new: list[int]

    @classmethod
    def make(cls, n: int) -> "ChangePlan":
        k = max(1, round(n * 0.0033))
        kl = max(2, round(n * 0.001))
        rng = random.Random(f"imap-bench-changes:{n}")
        pool = list(range(n))
        picked = rng.sample(pool, 2 * k + kl)
        return cls(expunge=sorted(picked[:k]), server_flags=sorted(picked[k:2 * k]),
                   local_flags=sorted(picked[2 * k:]), new=list(range(n, n + k)))

    def apply_to_model(self, model: Model, folders: list[str]) -> Model:
        out = {f: dict(v) for f, v in model.items()}
        for i in self.expunge:
            del out[folder_of(i, folders)][i]
        for i in self.server_flags:
            f = folder_of(i, folders)
            out[f][i] = toggle(out[f][i], "SF")
        for i in self.local_flags:
            f = folder_of(i, folders)
            out[f][i] = toggle(out[f][i], "F")
        for i in self.new:
            out[folder_of(i, folders)][i] = flags_of(i)
        return out


def toggle(letters: str, which: str) -> str:
    s = set(letters)
    for c in which:
        s ^= {c}
    return "".join(sorted(s))


def build_corpus(n: int, extra: int, max_attachment: int) -> list[bytes]:
    return make_corpus(n + extra, max_attachment=max_attachment)


# ---------------------------------------------------------------------------------------
# reading a Maildir (server or local) and verifying
# ---------------------------------------------------------------------------------------

_INDEX_RE = re.compile(rb"^X-Corpus-Index: (\d+)\r?$", re.MULTILINE)
_ADDED_RE = re.compile(rb"^(X-TUID|X-OfflineIMAP):[^\n]*\n", re.MULTILINE | re.IGNORECASE)


def maildir_flags(name: str) -> str:
    _, sep, info = name.partition(":2,")
    return "".join(sorted(c for c in info if c in COMPARED_FLAGS)) if sep else ""


def corpus_index(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(16384)
        end = head.find(b"\n\n")
        if end < 0:
            head += f.read()
            end = head.find(b"\n\n")
    m = _INDEX_RE.search(head[:end] if end >= 0 else head)
    return int(m.group(1)) if m else None


def scan(folder_dir: Path) -> tuple[dict[int, list[Path]], list[Path]]:
    """{corpus index: [files]} for a Maildir folder, and the files without an index."""
    found: dict[int, list[Path]] = {}
    strays: list[Path] = []
    for sub in ("new", "cur"):
        d = folder_dir / sub
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith("."):
                continue
            p = d / name
            idx = corpus_index(p)
            if idx is None:
                strays.append(p)
            else:
                found.setdefault(idx, []).append(p)
    return found, strays


def comparable(data: bytes) -> bytes:
    data = data.replace(b"\r\n", b"\n")
    end = data.find(b"\n\n")
    if end < 0:
        return data
    head = _ADDED_RE.sub(b"", data[:end + 1])
    return head + data[end + 1:]


def check_side(side: str, found: dict[int, list[Path]], strays: list[Path],
               want: dict[int, str], folder: str, problems: list[str]) -> None:
    dups = [i for i, ps in found.items() if len(ps) > 1]
    if dups:
        problems.append(f"{side} {folder}: {len(dups)} messages stored more than once "
                        f"(e.g. #{dups[0]})")
    if strays:
        problems.append(f"{side} {folder}: {len(strays)} files without X-Corpus-Index "
                        f"(e.g. {strays[0].name})")
    missing = sorted(set(want) - set(found))
    extra = sorted(set(found) - set(want))
    if missing:
        problems.append(f"{side} {folder}: {len(missing)} messages missing "
                        f"(e.g. #{missing[:3]})")
    if extra:
        problems.append(f"{side} {folder}: {len(extra)} unexpected messages (e.g. #{extra[:3]})")
    wrong = [(i, maildir_flags(found[i][0].name), want[i]) for i in set(want) & set(found)
             if maildir_flags(found[i][0].name) != want[i]]
    if wrong:
        wrong.sort()
        problems.append(f"{side} {folder}: {len(wrong)} messages with wrong flags "
                        f"(e.g. #{wrong[0][0]} has {wrong[0][1]!r}, want {wrong[0][2]!r})")


def verify(tool: "ToolSetup", dc: Dovecot, user: str, model: Model, scenario: str,
           must_match: list[int] = ()) -> dict:
    """Raise BenchError unless server and local Maildir both equal *model*."""
    problems: list[str] = []
    counts: dict[str, int] = {}
    rng = random.Random(f"imap-bench-sample:{scenario}")
    all_idx = sorted(i for f in model.values() for i in f)
    sample = set(rng.sample(all_idx, min(SAMPLE, len(all_idx)))) | set(must_match)
    compared = 0
    local_folders = tool.local_folders()
    if set(local_folders) != set(model):
        problems.append(f"local folders {sorted(local_folders)} != server folders {sorted(model)}")
    for folder, want in model.items():
        s_found, s_strays = scan(dc.folder_path(user, folder))
        l_found, l_strays = scan(tool.folder_dir(folder))
        check_side("server", s_found, s_strays, want, folder, problems)
        check_side("local", l_found, l_strays, want, folder, problems)
        counts[folder] = sum(len(v) for v in l_found.values())
        for i in sorted(sample & set(want) & set(s_found) & set(l_found)):
            a = comparable(s_found[i][0].read_bytes())
            b = comparable(l_found[i][0].read_bytes())
            compared += 1
            if a != b:
                pos = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                problems.append(f"{folder} #{i}: local copy differs from the server's at byte "
                                f"{pos} (server {a[max(0, pos - 30):pos + 30]!r}, "
                                f"local {b[max(0, pos - 30):pos + 30]!r})")
    if compared < min(len(sample), len(all_idx)) and not problems:
        problems.append(f"only {compared} of {len(sample)} sampled messages compared")
    if problems:
        raise BenchError(f"{tool.name} {scenario}: result does not verify: "
                         + "; ".join(problems[:8]))
    return {"folders": counts, "messages": sum(counts.values()), "compared": compared}


# ---------------------------------------------------------------------------------------
# the tools
# ---------------------------------------------------------------------------------------

class ToolSetup:
    name = ""

    def __init__(self, dc: Dovecot, user: str, work: Path) -> None:
        self.dc, self.user, self.work = dc, user, work
        self.mail = work / "Mail"

    def command(self) -> tuple[list[str], dict | None]:
        raise NotImplementedError

    def folder_dir(self, folder: str) -> Path:
        raise NotImplementedError

    def local_folders(self) -> list[str]:
        raise NotImplementedError

    def tool_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSYNC_")}
        env["HOME"] = str(self.work)     # never read or write the real ~/.mbsyncrc etc.
        # Python tools (mailsync, offlineimap) as installed normally: with cached bytecode.
        # This sandbox sets PYTHONDONTWRITEBYTECODE, which would charge every run with
        # compiling its modules; the cache goes to our scratch directory, not the tree.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # This sandbox also points SSL_CERT_FILE and SSL_CERT_DIR at the system's own CA
        # bundle and directory, which a normal installation leaves unset: every tool
        # then finds the system CAs as OpenSSL does by default.
        env.pop("SSL_CERT_FILE", None)
        env.pop("SSL_CERT_DIR", None)
        if PYCACHE is not None:
            env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
        return env


class MailsyncSetup(ToolSetup):
    name = "mailsync"

    def command(self):
        keys = {"protocol": "imap", "host": self.dc.host, "port": self.dc.imaps_port,
                "user": self.user, "password": self.dc.password,
                "ca_file": str(self.dc.ca_file), "maildir": str(self.mail),
                "state_dir": str(self.work / "state"), "layout": "maildir++", "timeout": 120}
        lines = ["[accounts.bench]"] + [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
        conf = _private_file(self.work / "config.toml", "\n".join(lines) + "\n")
        if MAILSYNC is None:
            raise BenchError("mailsync is not installed for the bench (install_mailsync)")
        return [str(MAILSYNC), "-c", str(conf), "--no-progress", "sync"], self.tool_env()

    def folder_dir(self, folder):
        return self.mail if folder == "INBOX" else self.mail / ("." + folder)

    def local_folders(self):
        if not self.mail.is_dir():
            return []
        out = ["INBOX"] if (self.mail / "cur").is_dir() else []
        return out + [p.name[1:] for p in self.mail.iterdir()
                      if p.is_dir() and p.name.startswith(".") and (p / "cur").is_dir()]


class MbsyncSetup(ToolSetup):
    name = "mbsync"

    def command(self):
        rc = _private_file(self.work / "mbsyncrc", f"""\
IMAPAccount bench
Host localhost
Port {self.dc.imaps_port}
User {self.user}
Pass {self.dc.password}
SSLType IMAPS
CertificateFile {self.dc.ca_file}

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path {self.mail}/
Inbox {self.mail}/INBOX
SubFolders Verbatim

Channel bench
Far :bench-far:
Near :bench-near:
Patterns *
Create Both
Expunge Both
SyncState *
""")
        self.mail.mkdir(parents=True, exist_ok=True)
        return ["mbsync", "-c", str(rc), "-a"], self.tool_env()

    def folder_dir(self, folder):
        return self.mail / folder

    def local_folders(self):
        if not self.mail.is_dir():
            return []
        return [p.name for p in self.mail.iterdir() if p.is_dir() and (p / "cur").is_dir()]


class OfflineimapSetup(ToolSetup):
    name = "offlineimap"

    def command(self):
        meta = self.work / "offlineimap-meta"
        conf = _private_file(self.work / "offlineimaprc", f"""\
[general]
accounts = bench
metadata = {meta}
maxsyncaccounts = 1

[Account bench]
localrepository = bench-local
remoterepository = bench-remote

[Repository bench-local]
type = Maildir
localfolders = {self.mail}

[Repository bench-remote]
type = IMAP
remotehost = localhost
remoteport = {self.dc.imaps_port}
remoteuser = {self.user}
remotepass = {self.dc.password}
ssl = yes
sslcacertfile = {self.dc.ca_file}
folderfilter = lambda folder: True
""")
        self.mail.mkdir(parents=True, exist_ok=True)
        return ["offlineimap", "-c", str(conf), "-o", "-u", "quiet"], self.tool_env()

    def folder_dir(self, folder):
        return self.mail / folder

    def local_folders(self):
        if not self.mail.is_dir():
            return []
        return [p.name for p in self.mail.iterdir() if p.is_dir() and (p / "cur").is_dir()]


SETUPS = {"mailsync": MailsyncSetup, "mbsync": MbsyncSetup, "offlineimap": OfflineimapSetup}


# ---------------------------------------------------------------------------------------
# measuring one process
# ---------------------------------------------------------------------------------------

_RUSAGE_HELPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:], stdin=subprocess.DEVNULL)\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(f'{r.ru_maxrss} {r.ru_utime} {r.ru_stime}')\n"
    "sys.exit(rc)\n"
)
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Measurement:
    wall: float
    rss_kb: int
    returncode: int
    output: str
    tool_cpu: float = 0.0        # user + system seconds of the tool's process tree
    server_cpu: float = 0.0      # ... of our Dovecot's processes during the run
    foreign_cpu: float = 0.0     # CPU seconds used meanwhile by anything else on the machine


def _cpu_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (all CPUs; steal excluded)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / _TICK


def _proc_cpu(pid: int, children: bool) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(rest[11]) + int(rest[12]) + ((int(rest[13]) + int(rest[14])) if children else 0)
    return ticks / _TICK


def _server_cpu(dc: Dovecot | None) -> float:
    """CPU seconds of our Dovecot: the master with its reaped children, plus live ones."""
    if dc is None or dc.pid is None:
        return 0.0
    total = _proc_cpu(dc.pid, children=True)
    for pid in dc.process_pids():
        if pid != dc.pid:
            total += _proc_cpu(pid, children=False)
    return total


def measure(cmd: list[str], env: dict | None, workdir: Path, timeout: float,
            dc: Dovecot | None = None) -> Measurement:
    """Run *cmd* once in its own session: wall seconds, peak RSS (KiB) and CPU seconds
    (the tool's, our server's and everybody else's on the machine meanwhile)."""
    rss_file = workdir / "rss.txt"
    out_file = workdir / "output.txt"
    rss_file.unlink(missing_ok=True)
    if rss_method() == "gnu-time":
        full = [GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file), *cmd]
    else:
        full = [sys.executable, "-c", _RUSAGE_HELPER, str(rss_file), *cmd]
    with open(out_file, "wb") as out:
        busy0, server0 = _cpu_busy(), _server_cpu(dc)
        start = time.perf_counter()
        proc = subprocess.Popen(full, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = wait_exact(proc, timeout)   # on time, not polled
        except subprocess.TimeoutExpired:
            raise BenchError(f"{cmd[0]} did not finish within {timeout:.0f} s") from None
        except BaseException:                      # stopped by a signal: the tool too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall = time.perf_counter() - start
        busy, server = _cpu_busy() - busy0, _server_cpu(dc) - server0
    output = out_file.read_bytes().decode(errors="replace")
    rss_kb, tool_cpu = -1, 0.0
    try:
        last = rss_file.read_text().strip().splitlines()[-1].split()
        rss_kb, tool_cpu = int(last[0]), float(last[1]) + float(last[2])
    except (OSError, ValueError, IndexError):
        pass
    return Measurement(wall, rss_kb, rc, output, tool_cpu, server,
                       max(0.0, busy - tool_cpu - server))


def disturbed(m: Measurement) -> bool:
    """Did other work on the machine use a noticeable share of a CPU during the run?"""
    return m.foreign_cpu > FOREIGN_SHARE * m.wall + FOREIGN_SLACK


def machine_busy(window: float = 0.5) -> float:
    """Busy share of all CPUs over *window* seconds (we only sleep meanwhile)."""
    b0, t0 = _cpu_busy(), time.perf_counter()
    time.sleep(window)
    return (_cpu_busy() - b0) / ((time.perf_counter() - t0) * (os.cpu_count() or 1))


def wait_quiet(max_wait: float) -> float:
    """Wait (at most max_wait s) until two successive 0.5 s windows are below
    QUIET_BUSY; returns the seconds waited."""
    t0 = time.perf_counter()
    deadline = t0 + max_wait
    quiet_in_a_row, told = 0, False
    while quiet_in_a_row < 2:
        busy = machine_busy()
        quiet_in_a_row = quiet_in_a_row + 1 if busy < QUIET_BUSY else 0
        if quiet_in_a_row < 2 and time.perf_counter() > deadline:
            log(f"machine still {busy:.0%} busy after {max_wait:.0f} s: measuring anyway")
            break
        if busy >= QUIET_BUSY and not told and max_wait > 0:
            log(f"machine {busy:.0%} busy (other work): waiting for it to go quiet")
            told = True
    return time.perf_counter() - t0


SETTLE_SECONDS = 2.0
# Creating 10,000 files soon after 10,000 were deleted nearby costs ext4 seconds of
# kernel time (find_inode_bit -> recently_deleted() looks at freed inodes it passes; half
# of an initial sync's CPU samples under perf), and not only for the 30 s the kernel calls
# "recent": measured by hand, an initial sync's system time was 0.85 s on fresh space and
# 3 s even 95 s after such a deletion. A user's first sync does not follow one, so each
# run's local copy is kept until the benchmark ends (the scratch folder goes then) while
# the disk has room (KEEP_MARGIN free after one more copy); otherwise it is deleted and
# the next timed run waits DELETE_SETTLE_SECONDS, which helps less.
DELETE_SETTLE_SECONDS = 35.0
KEEP_MARGIN = 2 << 30
_last_delete = 0.0


def discard_run(work: Path) -> None:
    """Keep a finished run's local copy while the disk has room, else delete it now
    (and note when: see DELETE_SETTLE_SECONDS)."""
    global _last_delete
    used = sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    if shutil.disk_usage(work).free > used + KEEP_MARGIN:
        return
    shutil.rmtree(work, ignore_errors=True)
    _last_delete = time.monotonic()


def settle_deletes() -> None:
    wait = _last_delete + DELETE_SETTLE_SECONDS - time.monotonic()
    if _last_delete and wait > 0:
        time.sleep(wait)


def settle(mail: Path) -> None:
    """Wait (untimed) until no local directory was modified in the last SETTLE_SECONDS,
    then sync(2) so no run pays for the writeback of an earlier one.

    A user resyncs minutes after the last change, not within the same second.  mbsync
    1.4 sleeps a whole second ("Maildir notice: sleeping due to recent directory
    modification") when it finds a Maildir directory modified within the current
    second, which would otherwise be charged to mbsync's no-op and change runs.
    """
    latest = 0.0
    if mail.is_dir():
        for dirpath, _dirnames, _files in os.walk(mail):
            try:
                latest = max(latest, os.stat(dirpath).st_mtime)
            except FileNotFoundError:
                pass
    wait = latest + SETTLE_SECONDS - time.time()
    if wait > 0:
        time.sleep(min(wait, SETTLE_SECONDS))
    os.sync()      # start with no dirty pages left over from seeding or the previous run


def install_mailsync(scratch: Path) -> Path:
    """mailsync from this checkout, installed as a user's `pip install` would (a wheel
    in a virtualenv, its console script), into the scratch directory; its
    dependencies are the ones this Python has. Not the development checkout: an
    editable install charges every start with its import finder (8 ms, pathlib and
    urllib included), which no user pays."""
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "bench-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                           "install", "--quiet", "--no-deps", "--disable-pip-version-check",
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    command = venv / "bin" / "mailsync"
    if done.returncode != 0 or not command.exists():
        raise BenchError(f"installing mailsync into {venv} failed:\n{done.stderr[-3000:]}")
    return command


# ---------------------------------------------------------------------------------------
# the server side: template, users, changes
# ---------------------------------------------------------------------------------------

def seed_template(dc: Dovecot, corpus: list[bytes], n: int, folders: list[str]) -> str:
    """Seed corpus[:n] (with layout and flags) into a user nobody logs in as."""
    user = dc.new_user("template")
    dc.seed(user, [])                               # the user's home and Maildir
    for f in folders:
        if f != "INBOX":
            dc.seed(user, [], folder=f)
    for i in range(n):
        dc.seed(user, [corpus[i]], folder=folder_of(i, folders), flags=flags_of(i))
    return user


def clone_user(dc: Dovecot, template: str) -> str:
    """A fresh user whose Maildir is a hard-linked copy of the template's."""
    user = dc.new_user("b")
    dc.seed(user, [])
    src, dst = dc.maildir(template), dc.maildir(user)
    done = subprocess.run(["cp", "-al", f"{src}/.", f"{dst}/"], capture_output=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"cp -al failed: {done.stderr.decode(errors='replace')}")
    return user


def drop_user(dc: Dovecot, user: str) -> None:
    shutil.rmtree(dc.home(user), ignore_errors=True)


def imap_client(dc: Dovecot, user: str):
    import ssl

    from imapclient import IMAPClient
    ctx = ssl.create_default_context(cafile=str(dc.ca_file))
    c = IMAPClient(dc.host, port=dc.imaps_port, ssl=True, ssl_context=ctx, timeout=60)
    c.login(user, dc.password)
    return c


def apply_changes(dc: Dovecot, user: str, tool: ToolSetup, plan: ChangePlan,
                  model: Model, corpus: list[bytes], folders: list[str]) -> None:
    """Server changes through a second IMAP client, local flag changes by renaming."""
    c = imap_client(dc, user)
    try:
        for folder in folders:
            touched = [i for i in plan.expunge + plan.server_flags
                       if folder_of(i, folders) == folder]
            if touched:
                c.select_folder(folder)
                uid_of: dict[int, int] = {}
                uids = c.search("ALL")
                fetched = c.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (X-CORPUS-INDEX)]"])
                for uid, data in fetched.items():
                    for v in data.values():
                        if isinstance(v, bytes):
                            m = _INDEX_RE.search(v.replace(b"\r\n", b"\n"))
                            if m:
                                uid_of[int(m.group(1))] = uid
                for i in plan.server_flags:
                    if folder_of(i, folders) != folder:
                        continue
                    cur = model[folder][i]
                    for letter in "SF":
                        if letter in cur:
                            c.remove_flags([uid_of[i]], [LETTER_TO_FLAG[letter]])
                        else:
                            c.add_flags([uid_of[i]], [LETTER_TO_FLAG[letter]])
                gone = [uid_of[i] for i in plan.expunge if folder_of(i, folders) == folder]
                if gone:
                    c.add_flags(gone, [b"\\Deleted"])
                    c.uid_expunge(gone)
                c.unselect_folder()
            for i in plan.new:
                if folder_of(i, folders) == folder:
                    c.append(folder, corpus[i].replace(b"\n", b"\r\n"),
                             [LETTER_TO_FLAG[x] for x in flags_of(i)])
    finally:
        try:
            c.logout()
        except Exception:
            pass
    for folder in folders:
        mine = [i for i in plan.local_flags if folder_of(i, folders) == folder]
        if not mine:
            continue
        found, _ = scan(tool.folder_dir(folder))
        for i in mine:
            if i not in found:
                raise BenchError(f"{tool.name}: local message #{i} not found in {folder}")
            p = found[i][0]
            base, sep, info = p.name.partition(":2,")
            letters = set(info) if sep else set()
            letters ^= {"F"}
            os.rename(p, p.parent.parent / "cur" / f"{base}:2,{''.join(sorted(letters))}")


# ---------------------------------------------------------------------------------------
# one tool run: three scenarios
# ---------------------------------------------------------------------------------------

@dataclass
class Result:
    tool: str
    repeat: int
    scenario: str
    wall: float
    rss_mb: float
    messages: int
    tool_cpu: float = 0.0
    server_cpu: float = 0.0
    foreign_cpu: float = 0.0
    disturbed: bool = False
    attempt: int = 1


def timed(setup: ToolSetup, cmd: list[str], env: dict | None, timeout: float,
          label: str, full_cmd: list[str] | None = None) -> Measurement:
    """settle(), wait for a quiet machine, run once; BenchError on a non-zero exit."""
    settle_deletes()
    settle(setup.mail)
    wait_quiet(QUIET_WAIT)
    m = measure(full_cmd or cmd, env, setup.work, timeout, setup.dc)
    if m.returncode != 0:
        raise BenchError(f"{label} exited with status {m.returncode}:\n{m.output[-3000:]}")
    return m


def run_tool_once(name: str, rep: int, attempt: int, dc: Dovecot, template: str,
                  scratch: Path, corpus: list[bytes], n: int, folders: list[str],
                  plan: ChangePlan, timeout: float) -> list[Result]:
    """One fresh user and Maildir, the three scenarios, each verified."""
    out: list[Result] = []
    user = clone_user(dc, template)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-{rep}-", dir=scratch))
    try:
        setup = SETUPS[name](dc, user, work)
        cmd, env = setup.command()
        model = initial_model(n, folders)
        for scenario in SCENARIOS:
            must = []
            if scenario == "change":
                apply_changes(dc, user, setup, plan, model, corpus, folders)
                model = plan.apply_to_model(model, folders)
                must = plan.new + plan.server_flags + plan.local_flags
            m = timed(setup, cmd, env, timeout, f"{name} {scenario}")
            checked = verify(setup, dc, user, model, scenario, must)
            r = Result(name, rep, scenario, m.wall, m.rss_kb / 1024, checked["messages"],
                       m.tool_cpu, m.server_cpu, m.foreign_cpu, disturbed(m), attempt)
            out.append(r)
            log(f"repeat {rep + 1} {name:<11} {scenario:<8} {m.wall:8.2f} s "
                f"{r.rss_mb:7.1f} MB  cpu tool {m.tool_cpu:6.2f} s server {m.server_cpu:5.2f} s "
                f"other {m.foreign_cpu:5.2f} s{'  DISTURBED' if r.disturbed else ''}  "
                f"verified {checked['messages']} messages "
                f"({checked['compared']} compared byte for byte)")
    finally:
        discard_run(work)
        drop_user(dc, user)
    return out


def run_tool(name: str, rep: int, dc: Dovecot, template: str, scratch: Path,
             corpus: list[bytes], n: int, folders: list[str], plan: ChangePlan,
             timeout: float, results: list[Result], retries: int) -> None:
    """run_tool_once(), again (at most *retries* times) while other work on the machine
    disturbed one of its timings; the last attempt counts."""
    for attempt in range(1, retries + 2):
        got = run_tool_once(name, rep, attempt, dc, template, scratch, corpus, n, folders,
                            plan, timeout)
        if not any(r.disturbed for r in got) or attempt == retries + 1:
            results.extend(got)
            return
        log(f"repeat {rep + 1} {name}: other work on the machine disturbed a timing: "
            f"running it again (attempt {attempt + 1} of {retries + 1})")


def warm_up(dc: Dovecot, scratch: Path, corpus: list[bytes], folders: list[str],
            tools: list[str], timeout: float) -> None:
    """One untimed initial sync and resync per tool on a small mailbox: bytecode caches
    (Python tools), binaries and TLS code in the page cache, as on a machine in use."""
    template = seed_template(dc, corpus, min(50, len(corpus)), folders)
    try:
        for name in tools:
            user = clone_user(dc, template)
            work = Path(tempfile.mkdtemp(prefix=f"warmup-{name}-", dir=scratch))
            try:
                setup = SETUPS[name](dc, user, work)
                cmd, env = setup.command()
                for k in range(2):
                    m = measure(cmd, env, work, timeout, dc)
                    if m.returncode != 0:
                        raise BenchError(f"{name} warm-up run exited with status "
                                         f"{m.returncode}:\n{m.output[-3000:]}")
            finally:
                discard_run(work)
                drop_user(dc, user)
    finally:
        drop_user(dc, template)


# ---------------------------------------------------------------------------------------
# summary, table, verdicts
# ---------------------------------------------------------------------------------------

def summarise(results: list[Result], tools: list[str]) -> dict:
    out: dict = {}
    for sc in SCENARIOS:
        rows = {}
        for tool in tools:
            rs = [r for r in results if r.tool == tool and r.scenario == sc]
            if rs:
                walls = [r.wall for r in rs]
                rss = [r.rss_mb for r in rs]
                rows[tool] = {"median": statistics.median(walls), "min": min(walls),
                              "max": max(walls), "rss_mb": statistics.median(rss),
                              "rss_mb_max": max(rss), "runs": len(rs),
                              "disturbed": sum(r.disturbed for r in rs),
                              "tool_cpu_median": statistics.median(r.tool_cpu for r in rs),
                              "server_cpu_median": statistics.median(r.server_cpu for r in rs)}
            clean = [r.wall for r in rs if not r.disturbed]
            if rs:
                rows[tool]["clean_runs"] = len(clean)
                rows[tool]["clean_median"] = statistics.median(clean) if clean else None
        base = rows.get(BASELINE, {}).get("median")
        clean_base = rows.get(BASELINE, {}).get("clean_median")
        for row in rows.values():
            row["ratio"] = row["median"] / base if base else None
            row["clean_ratio"] = (row["clean_median"] / clean_base
                                  if clean_base and row["clean_median"] is not None else None)
        if rows:
            out[sc] = rows
    return out


def table(summary: dict) -> str:
    lines = [f"{'scenario':<9} {'tool':<12} {'median s':>9} {'min s':>8} {'max s':>8} "
             f"{'x mbsync':>9} {'peak RSS MB':>12} {'tool CPU s':>11} {'server CPU s':>13} "
             f"{'quiet runs: median s':>21} {'x mbsync':>9}"]
    for sc, rows in summary.items():
        for tool, r in rows.items():
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
            clean = (f"{r['clean_median']:.2f} ({r['clean_runs']} of {r['runs']})"
                     if r["clean_median"] is not None else f"- (0 of {r['runs']})")
            cratio = f"{r['clean_ratio']:.2f}x" if r["clean_ratio"] is not None else "-"
            lines.append(f"{sc:<9} {tool:<12} {r['median']:>9.2f} {r['min']:>8.2f} "
                         f"{r['max']:>8.2f} {ratio:>9} {r['rss_mb']:>12.1f} "
                         f"{r['tool_cpu_median']:>11.2f} {r['server_cpu_median']:>13.2f} "
                         f"{clean:>21} {cratio:>9}")
    return "\n".join(lines)


def verdicts(summary: dict) -> list[str]:
    out = []
    labels = {"initial": "initial sync", "noop": "no-op resync", "change": "1% change resync"}
    for sc, target in TARGETS.items():
        r = summary.get(sc, {}).get("mailsync")
        if not r or r["ratio"] is None:
            out.append(f"{labels[sc]}: mailsync/mbsync = n/a (target <= {target}x): NOT MEASURED")
            continue
        ok = r["ratio"] <= target
        quiet = (f"; quiet runs only: {r['clean_ratio']:.2f}x "
                 f"{'PASS' if r['clean_ratio'] <= target else 'FAIL'}"
                 if r["clean_ratio"] is not None else "; no quiet runs of both tools")
        out.append(f"{labels[sc]}: mailsync/mbsync = {r['ratio']:.2f}x (target <= {target}x): "
                   f"{'PASS' if ok else 'FAIL'}{quiet}")
    r = summary.get("initial", {}).get("mailsync")
    if r:
        ok = r["rss_mb_max"] < RSS_TARGET_MB
        out.append(f"peak RSS, initial sync: mailsync max {r['rss_mb_max']:.1f} MB "
                   f"(target < {RSS_TARGET_MB:.0f} MB): {'PASS' if ok else 'FAIL'}")
    else:
        out.append("peak RSS, initial sync: n/a: NOT MEASURED")
    return out


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        text = (out.stdout or out.stderr).decode(errors="replace").strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(dc: Dovecot) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(),
            "dovecot": _first_line([dc.binary, "--version"]),
            "mbsync": _first_line(["mbsync", "--version"]),
            "offlineimap": _first_line(["offlineimap", "--version"]),
            "mailsync": mailsync_revision(),
            "rss_method": rss_method()}


def mailsync_revision() -> str:
    """The commit measured, and whether mailsync/ had uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                              capture_output=True, timeout=30).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "mailsync"], capture_output=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return f"{head or '?'}{' (+ uncommitted changes in mailsync/)' if dirty else ''}"


# ---------------------------------------------------------------------------------------
# --scale-check
# ---------------------------------------------------------------------------------------

def scale_check(dc: Dovecot, scratch: Path, n: int, folders: list[str], repeat: int,
                timeout: float) -> dict:
    corpus = make_corpus(5 * n)           # default profile: attachments up to 64 KB
    warm_up(dc, scratch, corpus, folders, ["mailsync"], timeout)
    out: dict = {"n": n, "runs": {}}
    for size in (n, 5 * n):
        t0 = time.perf_counter()
        template = seed_template(dc, corpus, size, folders)
        log(f"scale-check: seeded {size} messages in {time.perf_counter() - t0:.1f} s")
        results: list[Result] = []
        try:
            user = clone_user(dc, template)
            work = Path(tempfile.mkdtemp(prefix=f"scale-{size}-", dir=scratch))
            try:
                setup = MailsyncSetup(dc, user, work)
                cmd, env = setup.command()
                model = initial_model(size, folders)
                for k, scenario in enumerate(["initial"] + ["noop"] * repeat):
                    m = timed(setup, cmd, env, timeout, f"mailsync {scenario} at {size}")
                    checked = verify(setup, dc, user, model, scenario)
                    results.append(Result("mailsync", k, scenario, m.wall, m.rss_kb / 1024,
                                          checked["messages"], m.tool_cpu, m.server_cpu,
                                          m.foreign_cpu, disturbed(m)))
                    log(f"scale-check {size:>7} {scenario:<8} {m.wall:8.2f} s "
                        f"{m.rss_kb / 1024:7.1f} MB  cpu tool {m.tool_cpu:6.2f} s "
                        f"other {m.foreign_cpu:5.2f} s{'  DISTURBED' if disturbed(m) else ''}  "
                        f"verified {checked['messages']} messages")
            finally:
                discard_run(work)
                drop_user(dc, user)
        finally:
            drop_user(dc, template)
        noops = [r.wall for r in results if r.scenario == "noop"]
        out["runs"][size] = {"initial": results[0].wall, "noop_median": statistics.median(noops),
                             "disturbed": sum(r.disturbed for r in results),
                             "noop_min": min(noops), "noop_max": max(noops),
                             "noop_rss_mb": max(r.rss_mb for r in results if r.scenario == "noop")}
    a, b = out["runs"][n]["noop_median"], out["runs"][5 * n]["noop_median"]
    out["ratio"] = b / a
    out["verdict"] = (f"no-op resync at {5 * n} vs {n} messages: {b:.2f} s / {a:.2f} s = "
                      f"{b / a:.2f}x (target <= {SCALE_TARGET}x): "
                      f"{'PASS' if b / a <= SCALE_TARGET else 'FAIL'}")
    return out


# ---------------------------------------------------------------------------------------
# --profile
# ---------------------------------------------------------------------------------------

def profile_mailsync(dc: Dovecot, scratch: Path, n: int, folders: list[str], timeout: float,
                     top: int, out_dir: Path | None) -> dict:
    """mailsync's initial sync, a no-op resync and a resync after the 1 % change under
    cProfile (same corpus, layout and change as the benchmark); the top *top* lines
    sorted by cumtime and by tottime."""
    import io
    import pstats
    plan = ChangePlan.make(n)
    corpus = build_corpus(n, len(plan.new), MAX_ATTACHMENT)
    warm_up(dc, scratch, corpus, folders, ["mailsync"], timeout)
    template = seed_template(dc, corpus, n, folders)
    user = clone_user(dc, template)
    work = Path(tempfile.mkdtemp(prefix="profile-", dir=scratch))
    out: dict = {}
    try:
        setup = MailsyncSetup(dc, user, work)
        cmd, env = setup.command()
        model = initial_model(n, folders)
        for scenario in ("initial", "noop", "change"):
            if scenario == "change":
                apply_changes(dc, user, setup, plan, model, corpus, folders)
                model = plan.apply_to_model(model, folders)
            prof = work / f"{scenario}.prof"
            # cProfile runs a script: a driver runs main(), in the installed copy's
            # Python.
            driver = work / "profile_driver.py"
            driver.write_text("from mailsync.cli.app import main\nmain()\n")
            python = str(Path(cmd[0]).parent / "python")
            full = [python, "-m", "cProfile", "-o", str(prof), str(driver), *cmd[1:]]
            m = timed(setup, cmd, env, timeout, f"profiled mailsync {scenario}", full)
            verify(setup, dc, user, model, scenario)
            texts = {}
            for key in ("cumulative", "tottime"):
                buf = io.StringIO()
                pstats.Stats(str(prof), stream=buf).sort_stats(key).print_stats(top)
                texts[key] = buf.getvalue()
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(prof, out_dir / f"mailsync-{scenario}-{n}.prof")
                for key, text in texts.items():
                    (out_dir / f"mailsync-{scenario}-{n}-{key}.txt").write_text(text)
            out[scenario] = {"wall_profiled": m.wall, **texts}
            log(f"profile {scenario}: {m.wall:.2f} s under cProfile, verified")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_user(dc, user)
        drop_user(dc, template)
    return out


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    global _JSON, PYCACHE, QUIET_WAIT, MAILSYNC
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--folders", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds one tool run may take (default %(default)s)")
    ap.add_argument("--scale-check", action="store_true",
                    help="only run mailsync's no-op resync at N and 5N messages")
    ap.add_argument("--profile", action="store_true",
                    help="only profile mailsync (cProfile): initial sync and no-op resync")
    ap.add_argument("--profile-lines", type=int, default=40,
                    help="functions shown per profile listing (default %(default)s)")
    ap.add_argument("--profile-dir", type=Path, default=None,
                    help="also keep the .prof files and listings here")
    ap.add_argument("--quiet-wait", type=float, default=QUIET_WAIT, metavar="SECONDS",
                    help="before each timed run wait at most this long for the machine to "
                         "be quiet (< %d %%%% of all CPUs busy; default %%(default)s)"
                         % (QUIET_BUSY * 100))
    ap.add_argument("--retries", type=int, default=2,
                    help="run a tool's three scenarios again (at most this often) when other "
                         "work on the machine disturbed a timing (default %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    _JSON = args.json
    QUIET_WAIT = args.quiet_wait
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        ap.error(f"unknown tool(s): {', '.join(sorted(unknown))}")
    missing = [t for t in tools if t != "mailsync" and shutil.which(t) is None]
    if missing:
        ap.error(f"not installed: {', '.join(missing)}")
    if args.messages < 100:
        ap.error("--messages must be at least 100")
    folders = folder_names(args.folders)

    def stop(signum, _frame):
        raise SystemExit(f"stopped by signal {signum}")   # runs the clean-up below
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)     # also when started in the background (SIG_IGN)
    scratch = Path(tempfile.mkdtemp(prefix="mailsync-imapbench-"))
    scratch.chmod(0o755)          # Dovecot's mail processes run as nobody below it
    PYCACHE = scratch / "pycache"
    dc = Dovecot(scratch / "dovecot")
    results: list[Result] = []
    failures: list[dict] = []
    scale = profiles = None
    try:
        MAILSYNC = install_mailsync(scratch)
        dc.start()
        info = machine_info(dc)
        log(f"mailsync: {info['mailsync']}")
        if args.profile:
            profiles = profile_mailsync(dc, scratch, args.messages, folders, args.timeout,
                                        args.profile_lines, args.profile_dir)
        elif args.scale_check:
            scale = scale_check(dc, scratch, args.messages, folders, args.repeat, args.timeout)
        else:
            plan = ChangePlan.make(args.messages)
            t0 = time.perf_counter()
            corpus = build_corpus(args.messages, len(plan.new), MAX_ATTACHMENT)
            stats = corpus_stats(corpus[:args.messages])
            template = seed_template(dc, corpus, args.messages, folders)
            model = initial_model(args.messages, folders)
            log(f"corpus: {stats['count']} messages, {stats['total_bytes'] / 1e6:.1f} MB, "
                f"median {stats['median'] / 1e3:.1f} KB, largest {stats['max'] / 1e6:.2f} MB, "
                f"{stats['with_attachment']} with attachments; folders "
                + ", ".join(f"{f}={len(model[f])}" for f in folders)
                + f"; built and seeded in {time.perf_counter() - t0:.1f} s")
            log(f"change: {len(plan.new)} appended, {len(plan.server_flags)} server flag "
                f"changes, {len(plan.expunge)} expunged on the server, "
                f"{len(plan.local_flags)} local flag changes")
            warm_up(dc, scratch, corpus, folders, tools, args.timeout)
            for rep in range(args.repeat):
                order = tools[rep % len(tools):] + tools[:rep % len(tools)]
                for tool in order:
                    try:
                        run_tool(tool, rep, dc, template, scratch, corpus, args.messages,
                                 folders, plan, args.timeout, results, args.retries)
                    except Exception as exc:  # noqa: BLE001 -- report, go on with the others
                        if not isinstance(exc, BenchError):
                            exc = BenchError(f"{type(exc).__name__}: {exc}\n"
                                             + traceback.format_exc(limit=6))
                        failures.append({"tool": tool, "repeat": rep, "error": str(exc)})
                        log(f"repeat {rep + 1} {tool:<11} FAILED: {exc}")
    finally:
        dc.stop()                 # SIGTERM by pid, its descendants too
        shutil.rmtree(scratch, ignore_errors=True)

    if args.profile:
        if args.json:
            print(json.dumps({"machine": info, "profiles": profiles}, indent=2))
        else:
            for scenario, p in profiles.items():
                for key in ("cumulative", "tottime"):
                    print(f"===== mailsync {scenario} sync, {args.messages} messages, "
                          f"sorted by {key} ({p['wall_profiled']:.2f} s under cProfile) =====")
                    print(p[key])
        return 0
    if args.scale_check:
        if args.json:
            print(json.dumps({"machine": info, "scale_check": scale}, indent=2))
        else:
            print()
            for size, r in scale["runs"].items():
                print(f"{size:>7} messages: initial {r['initial']:.2f} s, no-op median "
                      f"{r['noop_median']:.2f} s (min {r['noop_min']:.2f}, max {r['noop_max']:.2f}), "
                      f"peak RSS {r['noop_rss_mb']:.1f} MB")
            print(scale["verdict"])
        return 0

    summary = summarise(results, tools)
    if args.json:
        print(json.dumps({"corpus": stats, "machine": info, "repeat": args.repeat,
                          "folders": {f: len(v) for f, v in model.items()},
                          "change": asdict(plan) | {"expunge": len(plan.expunge),
                                                    "server_flags": len(plan.server_flags),
                                                    "local_flags": len(plan.local_flags),
                                                    "new": len(plan.new)},
                          "summary": summary, "runs": [asdict(r) for r in results],
                          "failures": failures, "verdicts": verdicts(summary)}, indent=2))
    else:
        print()
        print(table(summary))
        print()
        for line in verdicts(summary):
            print(line)
        print(f"(peak RSS via {info['rss_method']}; {info['nproc']} CPUs, {info['cpu']}, "
              f"Python {info['python']}, Dovecot {info['dovecot']}, {info['mbsync']}, "
              f"offlineimap {info['offlineimap']}; mailsync {info['mailsync']})")
        for f in failures:
            print(f"FAILED: repeat {f['repeat'] + 1} {f['tool']}: {f['error'][:500]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
