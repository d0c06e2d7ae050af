"""POP3 servers that break the protocol: the run fails cleanly and deletes nothing unstored.

Every reply here is one a real server should not send. Each run goes through the CLI
against tests.fakeserver and must end with the contract's exit code (65 when the server
sent data that breaks the protocol, 75 when it stalled or dropped the connection: retry
later), exactly one line on stderr naming the account, no traceback, no file outside
the maildir and the state folder, and no DELE unless the message is stored.
"""

from __future__ import annotations

import time

import pytest

from tests.fakeserver import FakeRun, FakeServer, pop3_script

PROTOCOL, TEMPORARY = 65, 75

MSG = ["Subject: one", "", "body one"]
GOOD = {"USER": "+OK", "PASS": "+OK", "CAPA": ["+OK", "UIDL", "."], "STAT": "+OK 2 40",
        "LIST": ["+OK", "1 20", "2 20", "."], "UIDL": ["+OK", "1 uid-a", "2 uid-b", "."],
        "RETR": ["+OK", *MSG, "."], "DELE": "+OK", "QUIT": "+OK bye"}


def hostile(base, *, greeting="+OK fake ready", timeout=3, **changes):
    """Run `fetch` against GOOD with changes; (result, commands the server got, run)."""
    replies = dict(GOOD)
    replies.update(changes)
    log: list[str] = []
    run = FakeRun(base, "pop3", timeout=timeout)
    with FakeServer(pop3_script(replies, greeting=greeting, log=log)) as server:
        started = time.monotonic()
        result = run.run(server, "fetch")
        result.seconds = time.monotonic() - started
    return result, log, run


def assert_clean_failure(result, run, code: int, *words: str) -> None:
    """The contract for a hostile server: code, one line naming the account, no
    traceback, nothing written outside the maildir and the state folder."""
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "account test" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert run.stray_paths() == []


def assert_nothing_deleted(log: list[str], run) -> None:
    assert not any(line.upper().startswith("DELE") for line in log), log
    assert run.stored() == []


# The greeting and the login --------------------------------------------------------------

@pytest.mark.parametrize("greeting", [b"\xff\xfe\x00garbage\r\n", "HTTP/1.1 400 Bad Request"])
def test_a_greeting_that_is_not_ok_is_a_protocol_error(tmp_path, greeting):
    result, log, run = hostile(tmp_path, greeting=greeting)
    assert_clean_failure(result, run, PROTOCOL, "greeting")
    assert not any(line.startswith(("USER", "PASS")) for line in log)


def test_an_imap_greeting_names_the_wrong_port(tmp_path):
    result, log, run = hostile(tmp_path, greeting="* OK [CAPABILITY IMAP4rev1] an IMAP server")
    assert_clean_failure(result, run, 78, "an IMAP server", 'protocol = "pop3"')
    assert not any(line.startswith(("USER", "PASS")) for line in log)


def test_a_server_that_closes_right_after_the_greeting_is_temporary(tmp_path):
    # Not a failed login (77): the password was never judged; retry later.
    result, _, run = hostile(tmp_path, USER=None)
    assert_clean_failure(result, run, TEMPORARY)


def test_a_server_that_closes_before_the_greeting_is_temporary(tmp_path):
    result, _, run = hostile(tmp_path, greeting=None)
    assert_clean_failure(result, run, TEMPORARY)


def test_an_over_long_reply_during_login_is_a_protocol_error(tmp_path):
    result, log, run = hostile(tmp_path, USER=[b"+OK " + b"x" * 5000 + b"\r\n"])
    assert_clean_failure(result, run, PROTOCOL)
    assert not any(line.startswith("PASS") for line in log)


def test_a_truncated_greeting_then_silence_times_out(tmp_path):
    result, _, run = hostile(tmp_path, greeting=b"+OK fake rea", timeout=1)
    assert_clean_failure(result, run, TEMPORARY)
    assert result.seconds < 15


# Listings ---------------------------------------------------------------------------

@pytest.mark.parametrize("stat", ["+OK lots 40", "+OK", "+OK -", "* 2 EXISTS"])
def test_a_malformed_stat_is_a_protocol_error(tmp_path, stat):
    result, log, run = hostile(tmp_path, STAT=stat)
    assert_clean_failure(result, run, PROTOCOL)
    assert_nothing_deleted(log, run)


@pytest.mark.parametrize("lines", [["1 20", "3 20"], ["0 20", "1 20"], ["-1 20"],
                                   ["1 20", "99999999999999999999 20"], ["1 20", "1 20"],
                                   ["x 20"], ["1"], ["1 twenty"], [""]])
def test_a_list_with_numbers_out_of_range_or_garbage_is_a_protocol_error(tmp_path, lines):
    result, log, run = hostile(tmp_path, LIST=["+OK", *lines, "."])
    assert_clean_failure(result, run, PROTOCOL, "LIST")
    assert_nothing_deleted(log, run)


@pytest.mark.parametrize("size", ["-20", "-1"])
def test_a_negative_message_size_is_a_protocol_error(tmp_path, size):
    result, log, run = hostile(tmp_path, LIST=["+OK", f"1 {size}", "2 20", "."])
    assert_clean_failure(result, run, PROTOCOL, "LIST")
    assert_nothing_deleted(log, run)


@pytest.mark.parametrize("lines", [["1 same", "2 same"], ["1 uid-a", "1 uid-b"],
                                   ["1 uid-a", "3 uid-c"], ["1 " + "x" * 71],
                                   ["1 bad\x01uid"], ["1 ü-uid"], ["one uid-a"]])
def test_an_uidl_listing_with_duplicates_or_garbage_is_a_protocol_error(tmp_path, lines):
    result, log, run = hostile(tmp_path, UIDL=["+OK", *lines, "."])
    assert_clean_failure(result, run, PROTOCOL, "UIDL")
    assert_nothing_deleted(log, run)


def test_a_list_without_the_final_dot_times_out(tmp_path):
    result, log, run = hostile(tmp_path, LIST=["+OK", "1 20", "2 20"], timeout=1)
    assert_clean_failure(result, run, TEMPORARY, "in time")
    assert_nothing_deleted(log, run)
    assert result.seconds < 15


def test_a_capa_without_the_final_dot_times_out(tmp_path):
    result, log, run = hostile(tmp_path, CAPA=["+OK", "UIDL"], timeout=1)
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_deleted(log, run)


def test_a_list_cut_off_without_the_final_dot_is_temporary(tmp_path):
    # The listing stops mid-line and the server hangs up.
    result, log, run = hostile(tmp_path, LIST=[b"+OK\r\n1 20\r\n2 2", None])
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_deleted(log, run)


def test_an_over_long_line_is_a_protocol_error(tmp_path):
    result, log, run = hostile(tmp_path, LIST=[b"+OK\r\n1 " + b"9" * 20000])
    assert_clean_failure(result, run, PROTOCOL, "long")
    assert_nothing_deleted(log, run)


def test_an_endless_stream_without_line_ends_is_refused_quickly(tmp_path):
    # 1 MB without CRLF: refused after MAX_LINE bytes, never buffered whole.
    result, log, run = hostile(tmp_path, STAT=[b"+OK " + b"1" * (1 << 20)])
    assert_clean_failure(result, run, PROTOCOL, "long")
    assert_nothing_deleted(log, run)


@pytest.mark.parametrize("reply", ["OK 2 40", "+ok 2 40", "", "* LIST"])
def test_a_status_line_that_is_neither_ok_nor_err_is_a_protocol_error(tmp_path, reply):
    result, log, run = hostile(tmp_path, LIST=[reply, "1 20", "2 20", "."])
    assert_clean_failure(result, run, PROTOCOL, "LIST")
    assert_nothing_deleted(log, run)


# Messages ---------------------------------------------------------------------------

def test_a_retr_without_the_final_dot_times_out_and_nothing_is_deleted(tmp_path):
    result, log, run = hostile(tmp_path, RETR=["+OK", *MSG], timeout=2)
    assert_clean_failure(result, run, TEMPORARY, "in time")
    assert_nothing_deleted(log, run)
    assert result.seconds < 20


def test_a_retr_cut_off_mid_message_is_temporary_and_nothing_is_deleted(tmp_path):
    result, log, run = hostile(tmp_path, RETR=[b"+OK\r\nSubject: one\r\n\r\nbody o", None])
    assert_clean_failure(result, run, TEMPORARY)
    assert_nothing_deleted(log, run)


def test_a_retr_refused_after_others_were_stored_deletes_nothing_unstored(tmp_path):
    replies = iter([["+OK", *MSG, "."], ["-ERR no such message"]])   # RETR 1, RETR 2
    log: list[str] = []
    run = FakeRun(tmp_path, "pop3")
    answers = dict(GOOD)

    def handler(conn):
        conn.send("+OK fake ready")
        while (line := conn.readline()):
            log.append(line)
            word = line.split(" ", 1)[0].upper()
            reply = next(replies) if word == "RETR" else answers.get(word, "-ERR")
            for out in [reply] if isinstance(reply, str) else reply:
                conn.send(out)
            if word == "QUIT":
                return

    with FakeServer(handler) as server:
        result = run.run(server, "fetch")
    assert_clean_failure(result, run, PROTOCOL, "RETR")
    # The refusal stops the run before any DELE; nothing unstored can be deleted.
    assert not any(line.startswith("DELE") for line in log)
    assert not any(line.startswith("QUIT") for line in log)


def test_a_busy_refusal_of_retr_is_temporary(tmp_path):
    result, log, run = hostile(tmp_path, RETR="-ERR [SYS/TEMP] try later")
    assert_clean_failure(result, run, TEMPORARY, "busy")
    assert_nothing_deleted(log, run)


def test_a_retr_whose_body_never_ends_a_line_is_streamed_not_buffered(tmp_path):
    # A 4 MB "line": streamed to the file in pieces, then the dot; the message is stored
    # as sent and deleted afterwards (a legal, if odd, reply).
    body = b"X" * (4 << 20)
    result, log, run = hostile(tmp_path, STAT="+OK 1 4194304", LIST=["+OK", "1 4194304", "."],
                               UIDL=["+OK", "1 big", "."],
                               RETR=[b"+OK\r\n" + body + b"\r\n.\r\n"])
    assert result.code == 0, result.err
    assert run.stored() == [body + b"\n"]
    assert run.stray_paths() == []
