"""Server answers Dovecot won't give on demand: busy mailboxes, refused STARTTLS."""

from __future__ import annotations

from tests.fakeserver import FakeServer, pop3_script
from tests.test_pop3_failures import assert_one_clean_line


def fake_account(make_account, server, **keys):
    return make_account(host=server.host, port=server.port, tls="none",
                        allow_plaintext=True, **keys)


def test_mailbox_in_use_is_a_temporary_failure_not_an_auth_error(make_account):
    script = pop3_script({"USER": "+OK", "PASS": "-ERR [IN-USE] mailbox locked by another client"})
    with FakeServer(script) as server:
        result = fake_account(make_account, server).run("fetch")
    assert_one_clean_line(result, 75, "busy")


def test_login_delay_is_a_temporary_failure(make_account):
    script = pop3_script({"USER": "+OK", "PASS": "-ERR [LOGIN-DELAY] wait 10 minutes"})
    with FakeServer(script) as server:
        result = fake_account(make_account, server).run("fetch")
    assert_one_clean_line(result, 75)


def test_refused_starttls_never_falls_back_to_plain_text(make_account):
    log: list[str] = []
    script = pop3_script({"STLS": "-ERR not here", "CAPA": ["+OK", "USER", "."]}, log=log)
    with FakeServer(script) as server:
        result = make_account(host=server.host, port=server.port, tls="starttls").run("fetch")
    assert_one_clean_line(result, 69, "STARTTLS")
    assert not any(line.upper().startswith(("USER", "PASS")) for line in log)


def test_duplicate_uidls_are_a_protocol_error_and_nothing_is_deleted(make_account):
    log: list[str] = []
    script = pop3_script({
        "USER": "+OK", "PASS": "+OK", "CAPA": ["+OK", "UIDL", "."], "STAT": "+OK 2 20",
        "LIST": ["+OK", "1 10", "2 10", "."], "UIDL": ["+OK", "1 same", "2 same", "."],
        "QUIT": "+OK"}, log=log)
    with FakeServer(script) as server:
        result = fake_account(make_account, server).run("fetch")
    assert_one_clean_line(result, 65, "UIDL")
    assert not any(line.startswith(("DELE", "RETR")) for line in log)
