"""The first sync's content pairing, without a server: which server message and which
local file hold the same mail, and which traces of other tools it may use."""

from __future__ import annotations

import hashlib

from mailsync import adoption, traces
from mailsync.adoption import LocalPrint, RemotePrint

A = b"From: a@example.net\nMessage-ID: <a@x>\nSubject: a\n\nBody A.\n"
B = b"From: b@example.net\nMessage-ID: <b@x>\nSubject: b\n\nBody B.\n"
NO_ID = b"From: c@example.net\nSubject: no id\n\nBody C.\n"


class Server:
    """Server messages by uid; counts what the pairing asked to fetch."""

    def __init__(self, messages: dict[int, bytes]) -> None:
        self.messages = messages
        self.header_asks: list[int] = []
        self.body_asks: list[int] = []

    def prints(self) -> dict[int, RemotePrint]:
        return {uid: RemotePrint(uid, _message_id(m), adoption.server_size(m))
                for uid, m in self.messages.items()}

    def headers(self, uids):
        self.header_asks += uids
        return {u: adoption.header_print(self.messages[u].split(b"\n\n")[0] + b"\n\n",
                                         adoption.server_size(self.messages[u]))
                for u in uids if u in self.messages}

    def hashes(self, uids):
        self.body_asks += uids
        return {u: adoption.body_hash(self.messages[u]) for u in uids}


def _message_id(message: bytes) -> str | None:
    for line in message.split(b"\n\n")[0].split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


def local_prints(files: dict[str, bytes], hints: dict[str, int] | None = None):
    return {k: adoption.local_print(k, m, _message_id(m), (hints or {}).get(k))
            for k, m in files.items()}


def pair(server: Server, files: dict[str, bytes], hints=None):
    return adoption.pair_by_content(server.prints(), local_prints(files, hints),
                                    server.headers, server.hashes,
                                    lambda key: adoption.body_hash(files[key]))


def test_same_messages_pair_one_to_one_by_message_id_size_and_header():
    server = Server({10: A, 11: B})
    assert pair(server, {"k1": B, "k2": A}) == [(10, "k2"), (11, "k1")]
    assert server.body_asks == []


def test_nothing_in_common_pairs_nothing():
    assert pair(Server({1: A}), {"k": B}) == []


def test_a_file_mbsync_wrote_with_x_tuid_still_pairs():
    tuid = A.replace(b"Subject: a\n", b"Subject: a\nX-TUID: 3FmZ0f1lWxVD\n")
    assert pair(Server({1: A}), {"k": tuid}) == [(1, "k")]
    assert pair(Server({1: tuid}), {"k": A}) == [(1, "k")]


def test_crlf_files_pair_with_the_server_count():
    assert pair(Server({1: A}), {"k": A.replace(b"\n", b"\r\n")}) == [(1, "k")]


def test_messages_without_message_id_pair_by_header():
    assert pair(Server({1: NO_ID, 2: A}), {"x": NO_ID}) == [(1, "x")]


def test_identical_copies_pair_in_order_and_the_extra_one_stays_unpaired():
    server = Server({1: A, 2: A, 3: A})
    assert pair(server, {"x": A, "y": A}) == [(1, "x"), (2, "y")]
    assert sorted(server.body_asks) == [1, 2, 3]


def test_a_copy_gone_from_both_sides_meanwhile_is_paired_with_nothing():
    server = Server({1: A, 2: A})
    prints = local_prints({"x": A, "y": A})
    found = adoption.pair_by_content(server.prints(), prints, server.headers,
                                     lambda uids: {1: adoption.body_hash(A)},   # 2 is gone
                                     lambda key: "" if key == "y" else adoption.body_hash(A))
    assert found == [(1, "x")]


def test_same_message_id_with_another_body_of_the_same_size_does_not_pair():
    edited = A.replace(b"Body A.", b"Body Z.")
    assert pair(Server({1: A, 2: edited}), {"x": edited, "y": B}) == [(2, "x")]
    assert pair(Server({1: A, 2: B}), {"x": edited, "y": A}) == [(1, "y")]


def test_a_trace_that_agrees_spares_the_header_fetch():
    server = Server({7: A, 8: B})
    assert pair(server, {"x": A, "y": B}, hints={"x": 7, "y": 8}) == [(7, "x"), (8, "y")]
    assert server.header_asks == []


def test_a_trace_that_disagrees_is_not_trusted():
    server = Server({7: A, 8: B})
    assert pair(server, {"x": A}, hints={"x": 8}) == [(7, "x")]


def test_a_placeholder_pairs_by_message_id_and_the_size_it_names():
    prints = {"p": adoption.local_print("p", b"header only", "<a@x>",
                                        placeholder_size=adoption.server_size(A))}
    server = Server({1: A, 2: B})
    found = adoption.pair_by_content(server.prints(), prints, server.headers, server.hashes,
                                     lambda key: "")
    assert found == [(1, "p")]


def test_refusal_when_the_pairing_missed_the_same_mail_changed_by_another_tool():
    refuse = adoption.first_sync_refusal
    changed = refuse(100, 90, 0, 100, 90, alike=90)
    assert changed and "--allow-mass-copy" in changed and "differ in content" in changed
    assert refuse(100, 90, 85, 15, 5, alike=5) is None       # most found: a few new each side
    assert refuse(1000, 10, 10, 990, 0, alike=0) is None     # the small side all found
    assert refuse(3, 4, 0, 3, 4, alike=4) is None            # too few to be a surprise
    assert refuse(100, 90, 0, 0, 0, alike=90) is None        # nothing would be copied


def test_refusal_when_two_large_folders_have_nothing_in_common():
    refuse = adoption.first_sync_refusal
    assert "nothing in common" in refuse(400, 300, 0, 400, 300, alike=0)
    assert refuse(40, 8, 0, 40, 8, alike=0) is None          # a few drafts of the user's own


def test_unpaired_alike_counts_files_whose_message_id_an_unpaired_server_message_has():
    local = local_prints({"x": A, "y": B, "z": NO_ID})
    assert adoption.unpaired_alike({1: "<a@x>", 2: "<b@x>"}, local, [(2, "y")]) == 1
    assert adoption.unpaired_alike({1: "<a@x>"}, local, [(1, "x")]) == 0


# Traces -----------------------------------------------------------------------------------
def test_offlineimap_names_carry_the_server_uid(tmp_path):
    key = "1700000000_0.123.host,U=42,FMD5=" + hashlib.md5(b"INBOX").hexdigest()
    assert traces.server_uid_hints(tmp_path, [key, "plain"], 1) == {key: 42}


def test_mbsync_state_maps_its_maildir_uids_to_server_uids(tmp_path):
    (tmp_path / ".mbsyncstate").write_text(
        "FarUidValidity 555\nMaxPulledUid 9\nNearUidValidity 1\nMaxPushedUid 3\n\n"
        "9 3 S\n4 1 \n")
    keys = ["1.M1P1.h,U=3", "2.M2P2.h,U=1", "3.M3P3.h,U=8"]
    assert traces.server_uid_hints(tmp_path, keys, 555) == {keys[0]: 9, keys[1]: 4}
    assert traces.server_uid_hints(tmp_path, keys, 556) == {}   # another UIDVALIDITY


def test_dovecot_uidlist_gives_uids_when_its_uidvalidity_is_the_servers(tmp_path):
    (tmp_path / "dovecot-uidlist").write_text(
        "3 V1700000000 N5 Gabc\n1 :1.M1P1.h\n4 W1200 S1180 :2.M2P2.h\n")
    keys = ["1.M1P1.h", "2.M2P2.h"]
    assert traces.server_uid_hints(tmp_path, keys, 1700000000) == {keys[0]: 1, keys[1]: 4}
    assert traces.server_uid_hints(tmp_path, keys, 1) == {}


def test_the_content_pairing_imports_no_io_library():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(adoption))
    imported = {(n.module or "").split(".")[0] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom)}
    imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}
    assert imported <= {"__future__", "hashlib", "re", "dataclasses", "typing"}, imported


# POP3: a Maildir getmail, fetchmail or mpop filled -----------------------------------------
def getmail_copy(message: bytes) -> bytes:
    return (b"Delivered-To: me@example.net\nReturn-Path: <a@example.net>\n"
            b"Received: from pop.example.net by getmail6\n\tfor <me@example.net>; Sat\n"
            + message)


def test_a_message_another_pop3_tool_stored_is_known_by_id_and_body():
    stored = adoption.StoredMessages([("g", getmail_copy(A)), ("b", B.replace(b"\n", b"\r\n"))])
    assert len(stored) == 2
    assert stored.take(A) == "g" and stored.take(B) == "b"
    assert stored.take(A) is None        # each stored copy answers for one server message
    assert stored.take(NO_ID) is None


def test_an_edited_body_under_the_same_message_id_is_not_known():
    stored = adoption.StoredMessages([("a", A)])
    assert stored.take(A.replace(b"Body A.", b"Body A!")) is None


def test_messages_without_id_and_one_body_are_told_apart_by_date_from_subject():
    notice = b"From: ci@example.net\nSubject: build passed\nDate: Mon, 1 Jan 2024 10:00 +0000\n\nok\n"
    later = notice.replace(b"10:00", b"11:00")
    stored = adoption.StoredMessages([("n", getmail_copy(notice))])
    assert stored.take(later) is None and stored.take(notice) == "n"
