"""What a user sees when things go wrong: one line, the contract's exit code, no loss."""

from __future__ import annotations

import socket
from collections import Counter

import pytest

from tests.corpus import make_corpus
from tests.proxy import CutProxy


def assert_one_clean_line(result, code: int, *words: str) -> None:
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for word in words:
        assert word in lines[0], lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def seeded(make_account):
    def make(**keys):
        acct = make_account(**keys)
        acct.server.seed(acct.user, make_corpus(3))
        return acct
    return make


def assert_server_untouched(acct) -> None:
    assert len(acct.server_messages()) == 3


def test_wrong_password_exits_77(seeded):
    acct = seeded(password="wrong")
    assert_one_clean_line(acct.run("fetch"), 77, "login", "failed")
    assert_server_untouched(acct)


def test_wrong_password_never_echoes_the_password(seeded):
    acct = seeded(password="Hunter2-secret")
    result = acct.run("-vv", "fetch")
    assert result.code == 77 and "Hunter2-secret" not in result.out + result.err


def test_the_password_never_appears_in_a_protocol_trace(seeded):
    acct = seeded()
    result = acct.run("-vv", "--no-progress", "fetch")
    assert result.code == 0
    assert "RETR" in result.err and "PASS <redacted>" in result.err
    assert acct.server.password not in result.out + result.err


def test_unreachable_port_exits_69(seeded):
    acct = seeded(port=free_port())
    assert_one_clean_line(acct.run("fetch"), 69, "cannot reach")


def test_untrusted_certificate_exits_77(seeded):
    acct = seeded(ca_file=None)
    assert_one_clean_line(acct.run("fetch"), 77, "not trusted")
    assert_server_untouched(acct)


def test_host_name_mismatch_exits_77(seeded, dovecot):
    acct = seeded(host=dovecot.mismatch_host)
    assert_one_clean_line(acct.run("fetch"), 77, "not trusted")


def test_starttls_is_verified_too(seeded, dovecot):
    acct = seeded(tls="starttls", port=dovecot.pop3_port)
    assert acct.run("fetch").code == 0 and acct.server_messages() == []


def test_malformed_config_exits_78(seeded):
    acct = seeded()
    acct.config.write_text(acct.config.read_text() + "keep = \n")
    assert_one_clean_line(acct.run("fetch"), 78, "config.toml", "line")
    assert_server_untouched(acct)


def test_unknown_key_exits_78_naming_it(seeded):
    acct = seeded()
    acct.config.write_text(acct.config.read_text() + 'kep = true\n')
    assert_one_clean_line(acct.run("fetch"), 78, "'kep'", "config.toml:")


def test_a_maildir_behind_a_file_is_a_config_error(seeded, tmp_path):
    # Knowable before connecting: refused at load (78), the file named, no disk hint.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    acct = seeded(maildir=str(blocker / "Mail"))
    assert_one_clean_line(acct.run("fetch"), 78, str(blocker), "is a file, not a folder")
    assert_server_untouched(acct)


def test_read_only_maildir_exits_74(seeded, read_only_dir):
    acct = seeded(maildir=str(read_only_dir / "Mail"))
    assert_one_clean_line(acct.run("fetch"), 74, str(read_only_dir / "Mail"))
    assert_server_untouched(acct)


def test_read_only_state_folder_exits_74(seeded, read_only_dir):
    acct = seeded(state_dir=str(read_only_dir / "state"))
    assert_one_clean_line(acct.run("fetch"), 74, str(read_only_dir / "state"))
    assert_server_untouched(acct)


@pytest.mark.parametrize("cut_after", [300, 2_000, 9_000, 20_000, 45_000, 80_000, 120_000])
def test_connection_cut_mid_download_loses_nothing_and_the_next_run_completes(
        make_account, dovecot, cut_after):
    corpus = make_corpus(40)
    acct = make_account()
    acct.server.seed(acct.user, corpus)
    with CutProxy(dovecot.host, dovecot.pop3s_port, cut_after_bytes=cut_after) as proxy:
        proxied = make_account(user=acct.user, port=proxy.port, maildir=str(acct.maildir),
                               state_dir=str(acct.state_dir))
        result = proxied.run("fetch")
    assert result.code == 75, result.err
    assert "Traceback" not in result.err
    stored = acct.local_messages()
    # Nothing the server lost is missing locally, and nothing is stored twice.
    assert not Counter(corpus) - Counter(stored + acct.server_messages())
    assert not Counter(stored) - Counter(corpus)
    assert acct.run("fetch").code == 0
    assert sorted(acct.local_messages()) == sorted(corpus)
    assert acct.server_messages() == []


def test_auth_plain_logs_in_with_sasl(seeded):
    acct = seeded(auth="plain")
    trace = acct.run("-vv", "--no-progress", "fetch")
    assert trace.code == 0 and "AUTH PLAIN <redacted>" in trace.err
    assert acct.server.password not in trace.err and acct.server_messages() == []


def test_xoauth2_sends_the_token_and_never_shows_it(make_account, tmp_path):
    from tests.fakeserver import FakeServer, pop3_script
    log: list[str] = []
    script = pop3_script({"AUTH": "-ERR [AUTH] invalid token"}, log=log)
    with FakeServer(script) as server:
        acct = make_account(host=server.host, port=server.port, tls="none",
                            allow_plaintext=True, password=None, auth="xoauth2",
                            oauth2_token_command="echo tok-SECRET-123")
        result = acct.run("-vv", "fetch")
    assert result.code == 77 and "tok-SECRET-123" not in result.out + result.err
    assert log and log[-1].startswith("AUTH XOAUTH2 ")
    import base64
    assert b"auth=Bearer tok-SECRET-123" in base64.b64decode(log[-1].split()[-1])


def test_messages_complete_before_a_cut_are_kept_so_a_flaky_link_makes_progress(
        make_account, dovecot):
    corpus = make_corpus(40)
    acct = make_account()
    acct.server.seed(acct.user, corpus)
    with CutProxy(dovecot.host, dovecot.pop3s_port, cut_after_bytes=120_000) as proxy:
        proxied = make_account(user=acct.user, port=proxy.port, maildir=str(acct.maildir),
                               state_dir=str(acct.state_dir))
        assert proxied.run("fetch").code == 75
    stored = acct.local_messages()
    assert stored and not Counter(stored) - Counter(corpus)
    assert not list((acct.maildir / "tmp").iterdir())
    assert acct.run("--json", "fetch").json["accounts"][0]["downloaded"] == 40 - len(stored)
