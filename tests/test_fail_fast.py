"""Wrong ports, tls settings and local paths: found in seconds (or at load), exit 78,
the account named and the setting that fixes it given.

Each run gets timeout = 600 in its config and the test's own subprocess limit is far
lower: a run that waited for the timeout instead of recognising the mismatch fails."""

from __future__ import annotations

import pytest

GUARD = 120   # seconds the test waits for one run: far under the account's timeout


def _ports(dc):
    return {("pop3", "implicit"): dc.pop3s_port, ("pop3", "plain"): dc.pop3_port,
            ("imap", "implicit"): dc.imaps_port, ("imap", "plain"): dc.imap_port}


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_starttls_on_an_implicit_tls_port_names_the_fix(make_account, dovecot, protocol):
    acct = make_account(protocol, tls="starttls", timeout=600,
                        port=_ports(dovecot)[protocol, "implicit"])
    result = acct.run("-q", "run", timeout=GUARD)
    assert result.code == 78, result.err
    assert "account test:" in result.err and "expects TLS at once" in result.err
    assert 'tls = "implicit"' in result.err


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_implicit_tls_on_a_plain_port_names_the_fix(make_account, dovecot, protocol):
    acct = make_account(protocol, tls="implicit", timeout=600,
                        port=_ports(dovecot)[protocol, "plain"])
    result = acct.run("run", timeout=GUARD)
    assert result.code == 78, result.err
    assert "account test:" in result.err and "plain text, not TLS" in result.err
    assert 'tls = "starttls"' in result.err


@pytest.mark.parametrize("protocol,tls", [("imap", "implicit"), ("imap", "plain"),
                                          ("pop3", "implicit"), ("pop3", "plain")])
def test_an_account_on_the_other_protocols_port_says_so(make_account, dovecot, protocol,
                                                       tls):
    other = "pop3" if protocol == "imap" else "imap"
    acct = make_account(protocol, timeout=600, port=_ports(dovecot)[other, tls],
                        tls="implicit" if tls == "implicit" else "starttls")
    result = acct.run("run", timeout=GUARD)
    assert result.code == 78, result.err
    assert f" {other.upper()} server" in result.err, result.err
    assert f'protocol = "{protocol}"' in result.err and "None" not in result.err
    assert "account test:" in result.err


def test_a_missing_ca_file_is_refused_at_load(make_account, tmp_path):
    acct = make_account(ca_file=str(tmp_path / "nope.pem"))
    for command in ("run", "check", "status"):
        result = acct.run(command, timeout=GUARD)
        assert result.code == 78, result.err
        assert "ca_file" in result.err and "does not exist" in result.err
        assert "config.toml:" in result.err   # the file and line to fix


def test_a_ca_file_that_is_not_pem_is_a_config_error(make_account, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    result = make_account(ca_file=str(bad)).run("run", timeout=GUARD)
    assert result.code == 78 and "account test: cannot load ca_file" in result.err


def test_a_maildir_that_is_a_file_is_refused_at_load(make_account, tmp_path):
    path = tmp_path / "mailfile"
    path.write_text("not a folder")
    for where in (path, path / "sub"):
        acct = make_account(maildir=str(where))
        acct.server.seed(acct.user, [b"Subject: x\n\nbody\n"])
        result = acct.run("run", timeout=GUARD)
        assert result.code == 78, result.err
        assert "[accounts.test]" in acct.config.read_text()
        assert "maildir" in result.err and "is a file, not a folder" in result.err
        assert "free" not in result.err and "config.toml:" in result.err
        assert len(acct.server_messages()) == 1


def test_an_empty_password_variable_is_refused_at_load(make_account):
    acct = make_account(password=None, password_env="MS_TEST_PW")
    for command in ("run", "status"):
        result = acct.run(command, env={"MS_TEST_PW": ""}, timeout=GUARD)
        assert result.code == 78
        assert "config.toml:" in result.err and "$MS_TEST_PW, which is empty" in result.err
    # Unset, it is needed only by what connects: status works, run says what to do.
    assert acct.run("status", timeout=GUARD).code == 0
    unset = acct.run("run", timeout=GUARD)
    assert unset.code == 78 and "account test: password_env names $MS_TEST_PW, which is " \
        "not set" in unset.err


def test_an_empty_password_in_the_file_is_refused_at_load(make_account):
    result = make_account(password="").run("status", timeout=GUARD)
    assert result.code == 78 and "password is empty" in result.err


def test_a_failing_password_command_shows_its_own_error(make_account):
    acct = make_account(password=None,
                        password_command="echo 'gpg: decryption failed: No secret key' >&2; "
                                         "exit 2")
    result = acct.run("run", timeout=GUARD)
    assert result.code == 78
    assert "account test: password_command failed with exit status 2" in result.err
    assert "gpg: decryption failed: No secret key" in result.err


def test_an_empty_password_command_output_is_refused(make_account, dovecot):
    acct = make_account(password=None, password_command="echo")
    result = acct.run("run", timeout=GUARD)
    assert result.code == 78 and "printed nothing" in result.err
    assert dovecot.password not in result.err


def test_a_slow_plain_server_is_not_taken_for_tls(tmp_path):
    """A server silent for over 2 s gets a TLS probe on a second connection; the probe
    fails (it is a plain server) and the run goes on with the greeting it waited for.
    This server greets no one until that probe arrives."""
    import itertools
    import threading

    from tests.fakeserver import FakeRun, FakeServer, pop3_script
    replies = {"USER": "+OK", "PASS": "+OK", "CAPA": ["+OK", "UIDL", "."],
               "STAT": "+OK 1 20", "LIST": ["+OK", "1 20", "."],
               "UIDL": ["+OK", "1 uid-a", "."], "RETR": ["+OK", "Subject: slow", "",
                                                         "body", "."],
               "DELE": "+OK", "QUIT": "+OK bye"}
    script = pop3_script(replies)
    connections = itertools.count(1)
    probed = threading.Event()

    def slow(conn):
        if next(connections) == 2:
            probed.set()
        probed.wait(GUARD)
        script(conn)

    run = FakeRun(tmp_path, "pop3", timeout=30)
    with FakeServer(slow) as server:
        try:
            result = run.run(server, "fetch", timeout=GUARD)
        finally:
            probed.set()
    assert result.code == 0, result.err
    assert next(connections) == 3   # the run's connection and the probe, no more
    assert run.stored() == [b"Subject: slow\n\nbody\n"]
