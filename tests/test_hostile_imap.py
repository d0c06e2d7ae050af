"""IMAP servers that break the protocol: the run fails cleanly and writes only inside.

Every answer here is one a real server should not send, played by tests.fakeserver's
imap_script through the CLI (`sync`). Unless a test says otherwise the contract is:
exit 65 when the server sent data that breaks the protocol, 75 when it stalled, hung up
or said BYE (retry later); exactly one line on stderr naming the account; no traceback;
nothing written outside the maildir and the state folder; no message stored from a
broken answer.

Not failures, by design (documented in the IMAP driver, mailsync/imap, and the man
page's "Folder names"): answers for UIDs that were not asked for are ignored; repeated
metadata for one UID is merged (servers send unsolicited FLAGS updates); hostile folder
names map to safe paths inside the maildir; a body longer than its RFC822.SIZE is stored
whole (servers misreport sizes; memory stays bounded by streaming); an unreadable
INTERNALDATE is treated as unknown.

Limits that make a protocol error (65): a literal imaplib would hold in memory over
64 MiB (names, flags, headers), a body literal over 2 GiB, a body over 64 MiB sent
before its UID, UIDs/UIDVALIDITY/UIDNEXT/counts beyond 32 bits, sizes and mod-sequences
beyond 63 bits, one UID's body sent twice in one FETCH.
"""

from __future__ import annotations

import resource
import time

import pytest

from tests.fakeserver import FakeRun, FakeServer, close_after, imap_script
from tests.test_hostile_pop3 import PROTOCOL, TEMPORARY, assert_clean_failure

MSGS = {1: b"Subject: one\nMessage-ID: <one@x>\n\nbody one\n",
        2: b"Subject: two\nMessage-ID: <two@x>\n\nbody two\n"}
WIRE = {uid: body.replace(b"\n", b"\r\n") for uid, body in MSGS.items()}
META = "UID FETCH RFC822.SIZE"        # the metadata FETCH (override key)
BODIES = "UID FETCH BODY.PEEK[]"      # the streamed body FETCH
SELECT_OK = ["* 2 EXISTS", "* OK [UIDVALIDITY 7] ok", "* OK [UIDNEXT 3] ok",
             "{tag} OK [READ-WRITE] done"]


def hostile(base, overrides=None, *, args=("sync",), timeout=3, keys=None, preexec=None,
            **script):
    """Run the CLI against imap_script(overrides); (result, commands seen, run)."""
    log: list[str] = []
    script.setdefault("messages", MSGS)
    run = FakeRun(base, "imap", timeout=timeout, **(keys or {}))
    with FakeServer(imap_script(overrides, log=log, **script)) as server:
        started = time.monotonic()
        result = run.run(server, *args, **({"preexec_fn": preexec} if preexec else {}))
        result.seconds = time.monotonic() - started
    return result, log, run


def fetch_line(seq: int, uid: int, body: bytes, announced: int | None = None) -> bytes:
    """One body FETCH answer; announced is the literal's length (default: the truth)."""
    return (b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (seq, uid, len(body) if announced is None
                                                     else announced) + body + b")\r\n")


def meta_line(seq: int, uid, size=None, flags=b"()") -> str:
    size = len(WIRE.get(uid, b"x")) if size is None else size
    return (f"* {seq} FETCH (UID {uid} FLAGS {flags.decode()} RFC822.SIZE {size} "
            'INTERNALDATE "01-Jan-2024 10:00:00 +0000")')


def assert_nothing_stored(run) -> None:
    assert run.stored() == []


# The greeting and the login --------------------------------------------------------------

@pytest.mark.parametrize("greeting", ["HTTP/1.1 400 Bad Request", "\x00\x01\x02",
                                      "* NO go away"])
def test_a_greeting_that_is_not_ok_is_a_protocol_error(tmp_path, greeting):
    result, log, run = hostile(tmp_path, greeting=greeting)
    assert_clean_failure(result, run, PROTOCOL)
    assert not any(line.startswith("LOGIN") for line in log)


def test_a_pop3_greeting_names_the_wrong_port(tmp_path):
    result, log, run = hostile(tmp_path, greeting="+OK POP3 server ready")
    assert_clean_failure(result, run, 78, "a POP3 server", 'protocol = "imap"')
    assert not any(line.startswith("LOGIN") for line in log)


def test_a_bye_greeting_is_temporary(tmp_path):
    result, _, run = hostile(tmp_path, greeting="* BYE too many connections")
    assert_clean_failure(result, run, TEMPORARY)


def test_a_server_that_closes_before_the_greeting_is_temporary(tmp_path):
    result, _, run = hostile(tmp_path, greeting=None)
    assert_clean_failure(result, run, TEMPORARY)


@pytest.mark.parametrize("command", ["CAPABILITY", "LOGIN"])
def test_a_server_that_closes_right_after_the_greeting_is_temporary(tmp_path, command):
    result, _, run = hostile(tmp_path, {command: None})
    assert_clean_failure(result, run, TEMPORARY)


@pytest.mark.parametrize("answer", [["{tag} OK done"], ["* CAPABILITY", "{tag} OK done"],
                                    [b"* CAPABILITY {5}\r\nIMAP4\r\n{tag} OK done\r\n"]])
def test_a_capability_answer_without_capabilities_is_a_protocol_error(tmp_path, answer):
    result, log, run = hostile(tmp_path, {"CAPABILITY": answer})
    assert_clean_failure(result, run, PROTOCOL)
    assert not any(line.startswith("LOGIN") for line in log)


def test_a_truncated_greeting_then_silence_times_out(tmp_path):
    result, _, run = hostile(tmp_path, greeting=b"* OK fake rea", timeout=1)
    assert_clean_failure(result, run, TEMPORARY)
    assert result.seconds < 15


# LIST -------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", [
    b'(\\HasNoChildren "/" INBOX',                 # unbalanced
    b'(\\HasNoChildren) "//" "INBOX"',              # two-character delimiter
    b'(\\HasNoChildren) "/"',                       # no name
    b'(\\HasNoChildren) "/" "INBOX" extra junk',    # too many fields
    b'"/" "INBOX"',                                 # no flags
    b'(\\HasNoChildren) "/" "unterminated',         # open quoted string
])
def test_a_malformed_list_is_a_protocol_error(tmp_path, entry):
    result, log, run = hostile(tmp_path, folders=["INBOX", entry])
    assert_clean_failure(result, run, PROTOCOL, "LIST")
    assert not any(line.startswith("SELECT") for line in log)
    assert_nothing_stored(run)


@pytest.mark.parametrize("layout", ["maildir++", "fs"])
def test_folder_names_aiming_outside_the_maildir_stay_inside(tmp_path, layout):
    outside = tmp_path / "outside-target"
    names = ["..", ".", "../..", "../../escape", "a/../../../b", "/etc", str(outside),
             "INBOX/../..", "..\\..\\win", "cur", "new/..", "tmp", "%2e%2e", ".hidden",
             "~", "~/x", "a//b", "/"]
    raw = [b'(\\HasNoChildren) "/" {%d}\r\n%s' % (len(n), n)     # NUL, CR/LF, 8-bit
           for n in (b"nul\x00../x", b"line\r\nbreak", b"\xff\xfe..", b"../\x00")]
    raw += [b'(\\HasNoChildren) NIL "../flat"', b'(\\HasNoChildren) "." "..x.."',
            b'(\\HasNoChildren) "." ".."']
    result, log, run = hostile(tmp_path, folders=["INBOX", *names, *raw],
                               args=("-q", "sync"), keys={"layout": layout})
    # The names that cannot be synced (a line break or NUL cannot be sent back, bytes
    # that are not UTF-8 cannot be named locally) are skipped, named, and exit 1.
    assert result.code == 1, result.err
    for skipped in ("nul\\x00../x", "line\\r\\nbreak", "../\\x00"):
        assert f"folder {skipped} skipped" in result.err or skipped in result.err, skipped
    assert "Traceback" not in result.err + result.out
    assert run.stray_paths() == []
    assert not outside.exists()
    assert len(run.stored("INBOX" if layout == "fs" else "")) == 2
    assert sum(1 for line in log if line.startswith("SELECT")) >= len(names)


@pytest.mark.parametrize("layout", ["maildir++", "fs"])
def test_five_thousand_folders_finish_quickly_and_stay_inside(tmp_path, layout):
    names = [f"../f{i}" if i % 3 == 0 else f"dir{i % 50}/../sub{i}" if i % 3 == 1
             else f"/abs{i}" for i in range(5000)]
    result, log, run = hostile(tmp_path, folders=["INBOX", *names], args=("-q", "sync"),
                               keys={"layout": layout})
    assert result.code == 0, result.err
    assert "Traceback" not in result.err + result.out
    assert run.stray_paths() == []
    assert sum(1 for line in log if line.startswith("SELECT")) == 5001
    assert result.seconds < 90, result.seconds


def test_five_thousand_folders_are_listed_by_the_folders_command(tmp_path):
    names = [f"../f{i}" for i in range(5000)]
    result, _, run = hostile(tmp_path, folders=["INBOX", *names], args=("folders", "test"))
    assert result.code == 0, result.err
    assert result.out.count("../f") >= 5000
    assert run.stray_paths() == []
    assert not run.maildir.exists()


# SELECT -----------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "* OK [UIDVALIDITY 0] zero", "* OK [UIDVALIDITY -1] negative",
    "* OK [UIDVALIDITY 4294967296] over 32 bits",
    "* OK [UIDVALIDITY 99999999999999999999999999] absurd",
    "* OK [UIDVALIDITY abc] word",
])
def test_an_absurd_uidvalidity_is_a_protocol_error(tmp_path, line):
    answer = ["* 2 EXISTS", line, "* OK [UIDNEXT 3] ok", "{tag} OK [READ-WRITE] done"]
    result, _, run = hostile(tmp_path, {"SELECT": answer})
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_stored(run)


@pytest.mark.parametrize("lines", [
    ["* -2 EXISTS"], ["* 99999999999999999999999 EXISTS"],
    ["* 2 EXISTS", "* OK [UIDNEXT 0] zero"],
    ["* 2 EXISTS", "* OK [UIDNEXT 99999999999999999999] absurd"],
])
def test_an_absurd_exists_or_uidnext_is_a_protocol_error(tmp_path, lines):
    answer = [*lines, "* OK [UIDVALIDITY 7] ok", "{tag} OK [READ-WRITE] done"]
    result, _, run = hostile(tmp_path, {"SELECT": answer})
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_stored(run)


@pytest.mark.parametrize("answer", [
    ["{tag} BAD what?"],                                   # a command it must accept
    ["X999 OK [READ-WRITE] done"],                         # a tag never sent
    ["garbage without a star", "{tag} OK done"],           # not an IMAP response
    ["+ send more", "{tag} OK done"],                      # continuation out of place
    ["* 2 EXISTS", b"* OK [UIDVALIDITY 7] " + b"x" * 1_100_000 + b"\r\n"],  # over-long
    [b"* 2 EXISTS {3}\r\nabc\r\n", *SELECT_OK[1:]],          # a literal for a number
    [b"* FLAGS {5}\r\n\\Seen\r\n", *SELECT_OK],            # a literal for a list
])
def test_a_broken_select_answer_is_a_protocol_error(tmp_path, answer):
    result, _, run = hostile(tmp_path, {"SELECT": answer})
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_stored(run)


def test_a_select_answer_cut_off_is_temporary(tmp_path):
    result, _, run = hostile(tmp_path, {"SELECT": close_after("* 2 EXISTS\r\n* OK [UIDVAL")})
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_stored(run)


def test_a_select_that_never_completes_times_out(tmp_path):
    result, _, run = hostile(tmp_path, {"SELECT": ["* 2 EXISTS"]}, timeout=1)
    assert_clean_failure(result, run, TEMPORARY, "in time")
    assert result.seconds < 15


def test_an_absurd_highestmodseq_is_a_protocol_error(tmp_path):
    answer = [*SELECT_OK[:3], "* OK [HIGHESTMODSEQ 99999999999999999999999] x",
              "{tag} OK [READ-WRITE] done"]
    result, _, run = hostile(tmp_path, {"SELECT": answer, "ENABLE": ["* ENABLED CONDSTORE",
                                                                     "{tag} OK done"]},
                             capabilities="IMAP4rev1 UIDPLUS CONDSTORE ENABLE")
    assert_clean_failure(result, run, PROTOCOL, "HIGHESTMODSEQ")


# Metadata FETCH ---------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    meta_line(1, 0), meta_line(1, -1), meta_line(1, "abc"),
    meta_line(1, 4294967296), meta_line(1, 99999999999999999999999),
])
def test_uids_out_of_range_are_a_protocol_error(tmp_path, line):
    result, log, run = hostile(tmp_path, {META: [meta_line(1, 1), line, "{tag} OK done"]})
    assert_clean_failure(result, run, PROTOCOL)
    assert not any("BODY" in line for line in log)
    assert_nothing_stored(run)


@pytest.mark.parametrize("size", [-1, "abc", "NIL", 99999999999999999999999999])
def test_an_absurd_rfc822_size_is_a_protocol_error(tmp_path, size):
    result, log, run = hostile(tmp_path, {META: [meta_line(1, 1, size), meta_line(2, 2),
                                                 "{tag} OK done"]})
    assert_clean_failure(result, run, PROTOCOL, "SIZE")
    assert not any("BODY" in line for line in log)
    assert_nothing_stored(run)


@pytest.mark.parametrize("line", [
    "* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE 10",           # unbalanced
    "* 1 FETCH UID 1 FLAGS () RFC822.SIZE 10",                  # no list at all
    "* 1 FETCH (UID 1 FLAGS () RFC822.SIZE)",                   # odd item list
    "* 1 FETCH (UID 1 FLAGS \\Seen RFC822.SIZE 10 INTERNALDATE NIL)",   # FLAGS not a list
    "* one FETCH (UID 1 FLAGS () RFC822.SIZE 10)",              # sequence not a number
    "* 1 FETCH (UID 1 FLAGS (\"unterminated) RFC822.SIZE 10)",  # open quoted string
])
def test_a_malformed_fetch_answer_is_a_protocol_error(tmp_path, line):
    result, _, run = hostile(tmp_path, {META: [line, "{tag} OK done"]})
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_stored(run)


def test_repeated_uids_in_metadata_are_merged_not_duplicated(tmp_path):
    # Legal: a server may send unsolicited FLAGS updates for a UID it already answered.
    answer = [meta_line(1, 1), meta_line(1, 1, flags=b"(\\Seen)"), meta_line(2, 2),
              meta_line(2, 2), "{tag} OK done"]
    result, _, run = hostile(tmp_path, {META: answer}, args=("-q", "sync"))
    assert result.code == 0, result.err
    assert sorted(run.stored()) == sorted(MSGS.values())
    assert run.stray_paths() == []


def test_a_metadata_literal_shorter_than_announced_times_out(tmp_path):
    # The literal swallows the tagged completion; the client waits for the rest.
    answer = [b"* 1 FETCH (UID 1 FLAGS ({40}\r\n\\Seen) RFC822.SIZE 10)\r\n{tag} OK done\r\n"]
    result, _, run = hostile(tmp_path, {META: answer}, timeout=1)
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_stored(run)


def test_a_bye_during_a_fetch_is_temporary(tmp_path):
    result, _, run = hostile(tmp_path, {META: close_after(meta_line(1, 1)
                                                          + "\r\n* BYE shutting down\r\n")})
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_stored(run)


# Body FETCH -------------------------------------------------------------------------

def bodies(*parts: bytes) -> list[bytes]:
    return [b"".join(parts) + b"{tag} OK done\r\n"]


def test_bodies_for_uids_never_asked_for_are_ignored(tmp_path):
    # Documented: only the UIDs asked for are stored; UID 7 and 8 are dropped unread.
    extra = b"Subject: intruder\r\n\r\nnot asked for\r\n"
    answer = bodies(fetch_line(1, 7, extra), fetch_line(1, 1, WIRE[1]),
                    fetch_line(2, 8, extra), fetch_line(2, 2, WIRE[2]))
    result, _, run = hostile(tmp_path, {BODIES: answer}, args=("-q", "sync"))
    assert result.code == 0, result.err
    assert sorted(run.stored()) == sorted(MSGS.values())
    assert run.stray_paths() == []


def test_a_body_sent_twice_for_one_uid_is_a_protocol_error(tmp_path):
    answer = bodies(fetch_line(1, 1, WIRE[1]), fetch_line(1, 1, WIRE[2]),
                    fetch_line(2, 2, WIRE[2]))
    result, _, run = hostile(tmp_path, {BODIES: answer})
    assert_clean_failure(result, run, PROTOCOL, "twice")
    assert_nothing_stored(run)


def test_a_body_literal_shorter_than_announced_then_closed_is_temporary(tmp_path):
    answer = close_after(fetch_line(1, 1, WIRE[1][:10], announced=len(WIRE[1]))[:-3])
    result, _, run = hostile(tmp_path, {BODIES: answer})
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_stored(run)
    assert list((run.maildir / "tmp").iterdir()) == []


def test_a_body_literal_shorter_than_announced_then_silence_times_out(tmp_path):
    answer = bodies(fetch_line(1, 1, WIRE[1], announced=len(WIRE[1]) + 500))
    result, _, run = hostile(tmp_path, {BODIES: answer}, timeout=1)
    assert_clean_failure(result, run, TEMPORARY, "in time")
    assert_nothing_stored(run)


def test_a_body_literal_longer_than_announced_is_a_protocol_error(tmp_path):
    # The message's rest lands where the protocol expects FETCH items and responses.
    answer = bodies(fetch_line(1, 1, WIRE[1], announced=8), fetch_line(2, 2, WIRE[2]))
    result, _, run = hostile(tmp_path, {BODIES: answer})
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_stored(run)


def test_a_body_longer_than_its_rfc822_size_is_stored_whole(tmp_path):
    big = b"Subject: big\r\n\r\n" + b"line of text\r\n" * 5000
    meta = [meta_line(1, 1, 10), "{tag} OK done"]
    result, _, run = hostile(tmp_path, {META: meta, BODIES: bodies(fetch_line(1, 1, big))},
                             args=("-q", "sync"))
    assert result.code == 0, result.err
    assert run.stored() == [big.replace(b"\r\n", b"\n")]


@pytest.mark.parametrize("line", [
    b"+ go on\r\n",                                             # continuation
    b"garbage\r\n",                                             # not a response
    b"* 1 FETCH (UID 1 BODY[] " + b"x" * 1_100_000 + b"\r\n",   # over-long line
    b"X999 OK done\r\n",                                        # a tag never sent
])
def test_a_broken_body_fetch_answer_is_a_protocol_error(tmp_path, line):
    answer = [fetch_line(1, 1, WIRE[1]) + line + b"{tag} OK done\r\n"]
    result, _, run = hostile(tmp_path, {BODIES: answer})
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_stored(run)


def test_a_bye_during_a_body_fetch_is_temporary(tmp_path):
    answer = close_after(fetch_line(1, 1, WIRE[1]) + b"* BYE shutting down\r\n")
    result, _, run = hostile(tmp_path, {BODIES: answer})
    assert_clean_failure(result, run, TEMPORARY)
    # The server hung up: the message that arrived whole before is kept, once.
    assert run.stored() == [MSGS[1]]


# Gigantic literals: refused at once, never allocated ---------------------------------

GIB = 1 << 30


def limit_memory() -> None:
    """In the child: at most 1 GiB of address space, so allocating a gigantic literal's
    size fails loudly instead of silently reserving it."""
    resource.setrlimit(resource.RLIMIT_AS, (GIB, GIB))


@pytest.mark.parametrize("where,answer", [
    (BODIES, close_after(b"* 1 FETCH (UID 1 BODY[] {99999999999999}\r\n" + b"x" * 1000)),
    (BODIES, close_after(b"* 1 FETCH (UID 1 BODY[] {3000000000}\r\n" + b"x" * 1000)),
    (BODIES, close_after(b"* 3 EXPUNGE {99999999999999}\r\n" + b"x" * 1000)),
    (META, close_after(b"* 1 FETCH (UID 1 FLAGS ({99999999999999}\r\n" + b"x" * 1000)),
    (META, close_after(b"* 1 FETCH (UID 1 FLAGS ({1500000000}\r\n" + b"x" * 1000)),
    ("SELECT", close_after(b"* OK [UIDVALIDITY {1500000000}\r\n" + b"x" * 1000)),
    ("LIST", close_after(b'* LIST () "/" {99999999999999}\r\n' + b"x" * 1000)),
])
def test_a_gigantic_literal_is_refused_without_allocating_it(tmp_path, where, answer):
    result, _, run = hostile(tmp_path, {where: answer}, preexec=limit_memory)
    assert_clean_failure(result, run, PROTOCOL, "literal")
    assert result.seconds < 20
    assert_nothing_stored(run)


def test_a_gigantic_literal_in_the_greeting_is_refused_without_allocating_it(tmp_path):
    result, _, run = hostile(tmp_path, greeting=b"* OK {99999999999999}\r\nxxx",
                             preexec=limit_memory)
    assert_clean_failure(result, run, PROTOCOL, "literal")


def test_a_gigantic_literal_in_the_login_answer_is_refused(tmp_path):
    answer = close_after(b"* CAPABILITY {99999999999999}\r\nxxx")
    result, _, run = hostile(tmp_path, {"LOGIN": answer}, preexec=limit_memory)
    assert_clean_failure(result, run, PROTOCOL, "literal")


def test_a_large_body_literal_is_streamed_not_allocated(tmp_path):
    # 1.5 GB announced (under the 2 GiB cap), 1000 bytes sent, then the server hangs up:
    # the run waits for data chunk by chunk and fails as a lost connection.
    answer = close_after(b"* 1 FETCH (UID 1 BODY[] {1500000000}\r\n" + b"x" * 1000)
    result, _, run = hostile(tmp_path, {BODIES: answer}, preexec=limit_memory)
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_stored(run)


# Other numbers the state would keep --------------------------------------------------

def test_an_absurd_appenduid_is_not_recorded(tmp_path):
    # A local message to upload; the server's APPENDUID is beyond 32 bits: mailsync
    # looks the message up instead (and finds nothing here): a protocol error, no crash.
    run = FakeRun(tmp_path, "imap")
    for sub in ("cur", "new", "tmp"):
        (run.maildir / sub).mkdir(parents=True)
    (run.maildir / "cur" / "1.local:2,S").write_bytes(MSGS[1])
    result, log, run = hostile(tmp_path, {"APPEND": "{tag} OK [APPENDUID 1 "
                                          "99999999999999999999999] stored"}, messages={})
    assert any(line.startswith("APPEND") for line in log)
    assert_clean_failure(result, run, PROTOCOL, "UID")


@pytest.mark.parametrize("answer", [["{tag} OK done"],                  # no STATUS at all
                                    ['* STATUS "INBOX" ()', "{tag} OK done"],
                                    [b'* STATUS "INBOX" {5}\r\nhello\r\n{tag} OK done\r\n']])
def test_a_missing_or_empty_status_is_a_protocol_error(tmp_path, answer):
    result, _, run = hostile(tmp_path, {"STATUS": answer}, args=("folders", "test"))
    assert_clean_failure(result, run, PROTOCOL)


@pytest.mark.parametrize("date", ["2147483648-Jan-2024 10:00:00 +0000",
                                  "01-Jan-2024 10:00:00 -65535", "yesterday"])
def test_an_absurd_internaldate_is_ignored(tmp_path, date):
    # INTERNALDATE is informational: an unreadable one is treated as unknown.
    answer = [meta_line(1, 1).replace("01-Jan-2024 10:00:00 +0000", date), meta_line(2, 2),
              "{tag} OK done"]
    result, _, run = hostile(tmp_path, {META: answer}, args=("-q", "sync"))
    assert result.code == 0, result.err
    assert sorted(run.stored()) == sorted(MSGS.values())


@pytest.mark.parametrize("status", ["(MESSAGES 99999999999999999999 UIDNEXT 3 UIDVALIDITY 7)",
                                    "(MESSAGES 2 UIDNEXT 3 UIDVALIDITY -7)",
                                    "(MESSAGES 2 UIDNEXT 3",
                                    "(MESSAGES 2 UIDNEXT 3 UIDVALIDITY 0)"])
def test_an_absurd_status_is_a_protocol_error(tmp_path, status):
    answer = [f'* STATUS "INBOX" {status}', "{tag} OK done"]
    result, _, run = hostile(tmp_path, {"STATUS": answer}, args=("folders", "test"))
    assert_clean_failure(result, run, PROTOCOL)


# The streaming reader's own memory bound ----------------------------------------------

class _Endless:
    """A FETCH answer whose body literal is `size` bytes of generated data: readline and
    read as FetchReader uses them, without ever holding the body."""

    def __init__(self, head: bytes, size: int, tail: bytes) -> None:
        self.head, self.left, self.tail = head, size, tail

    def readline(self) -> bytes:
        if self.head:
            line, _, self.head = self.head.partition(b"\n")
            return line + b"\n"
        line, _, self.tail = self.tail.partition(b"\n")
        return line + b"\n" if line else b""

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        return b"x" * n


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes) -> None:
        self.n += len(data)


def test_a_huge_body_before_its_uid_is_never_held_in_memory():
    import tracemalloc
    from mailsync.drivers.imap.stream import FetchReader, StreamError
    size = 300 << 20
    wire = _Endless(b"* 1 FETCH (BODY[] {%d}\r\n" % size, size, b" UID 1)\r\nA1 OK done\r\n")
    reader = FetchReader(wire.readline, wire.read, b"A1")
    tracemalloc.start()
    try:
        reader.run({1}, lambda uid: _Counter(), lambda uid, n: None)
    except StreamError as exc:
        assert "before its UID" in str(exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 100 << 20, peak


# LIST-STATUS ------------------------------------------------------------------------------

LIST_STATUS_CAPS = "IMAP4rev1 UIDPLUS AUTH=PLAIN LIST-STATUS"


@pytest.mark.parametrize("status", [
    '* STATUS "INBOX" (MESSAGES x UIDNEXT 3)',            # not a number
    '* STATUS "INBOX" (MESSAGES 2 UIDNEXT)',              # odd item list
    '* STATUS "INBOX" MESSAGES 2',                        # no list at all
    '* STATUS "Elsewhere" (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 1)',   # a folder not listed
    '* STATUS (',                                         # broken
])
def test_an_unreadable_list_status_answer_just_means_select(tmp_path, status):
    answer = ['* LIST (\\HasNoChildren) "/" "INBOX"', status, "{tag} OK LIST done"]
    result, log, run = hostile(tmp_path, {"LIST RETURN": answer},
                               capabilities=LIST_STATUS_CAPS)
    assert result.code == 0, result.err
    assert any(line.startswith("LIST") and "RETURN" in line for line in log), log
    assert any(line.startswith("SELECT") for line in log), log
    assert len(run.stored()) == 2


@pytest.mark.parametrize("status", [
    '* STATUS "INBOX" (MESSAGES 2 UIDNEXT 3 UIDVALIDITY 0)',
    '* STATUS "INBOX" (MESSAGES 2 UIDNEXT 99999999999999999999 UIDVALIDITY 1)',
    '* STATUS "INBOX" (MESSAGES -2 UIDNEXT 3 UIDVALIDITY 1)',
])
def test_an_absurd_list_status_value_is_a_protocol_error(tmp_path, status):
    answer = ['* LIST (\\HasNoChildren) "/" "INBOX"', status, "{tag} OK LIST done"]
    result, _, run = hostile(tmp_path, {"LIST RETURN": answer},
                             capabilities=LIST_STATUS_CAPS)
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_stored(run)
