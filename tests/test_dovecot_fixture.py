"""Prove that the Dovecot test server, the corpus and the fault proxy work."""

from __future__ import annotations

import imaplib
import poplib
import re
import socket
import ssl
import time

import pytest
from imapclient import IMAPClient

from tests.corpus import TINY_INDEX, make_corpus, make_message
from tests.dovecot import Dovecot, pid_alive
from tests.proxy import CutProxy


def _ctx(dovecot) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(dovecot.ca_file))


def _crlf(msg: bytes) -> bytes:
    return msg.replace(b"\n", b"\r\n")


def _vsize(msg: bytes) -> int:
    return len(_crlf(msg))


def _pop3s(dovecot, user: str, host: str | None = None, port: int | None = None) -> poplib.POP3_SSL:
    p = poplib.POP3_SSL(host or dovecot.host, port or dovecot.pop3s_port, context=_ctx(dovecot), timeout=10)
    p.user(user)
    p.pass_(dovecot.password)
    return p


# --------------------------------------------------------------------- POP3

def test_pop3s_verified_stat_and_retr_identical(dovecot, mail_user):
    msgs = make_corpus(25)
    assert msgs[TINY_INDEX].endswith(b"\n\n.\n")
    dovecot.seed(mail_user, msgs)

    p = _pop3s(dovecot, mail_user)
    try:
        count, size = p.stat()
        assert count == len(msgs)
        assert size == sum(_vsize(m) for m in msgs)
        for i, msg in enumerate(msgs, 1):
            _resp, lines, _octets = p.retr(i)  # poplib undoes dot-stuffing
            assert b"\r\n".join(lines) + b"\r\n" == _crlf(msg), f"message {i} differs"
        uidl = p.uidl(1).split()
        assert re.fullmatch(rb"[0-9a-f]{16}", uidl[2]), uidl
        assert "PIPELINING" in p.capa()
        assert "UIDL" in p.capa()
    finally:
        p.quit()


def test_pop3_dot_stuffing_on_the_wire(dovecot, mail_user):
    msg = b"Subject: dots\n\nfirst\n.\n..\n.x\nlast\n"
    dovecot.seed(mail_user, [msg])
    p = _pop3s(dovecot, mail_user)
    try:
        p._putcmd("RETR 1")
        raw = b""
        while not raw.endswith(b"\r\n.\r\n"):
            chunk = p.sock.recv(4096)
            assert chunk
            raw += chunk
        assert b"\r\n..\r\n...\r\n..x\r\n" in raw
    finally:
        p.quit()


def test_seeded_order_flags_and_server_messages(dovecot, mail_user):
    a = [make_message(i, 500) for i in range(3)]
    b = [make_message(i, 500) for i in range(3, 5)]
    dovecot.seed(mail_user, a)
    dovecot.seed(mail_user, b, flags="S")
    assert dovecot.server_messages(mail_user) == a + b
    with IMAPClient(dovecot.host, port=dovecot.imaps_port, ssl=True, ssl_context=_ctx(dovecot), timeout=10) as c:
        c.login(mail_user, dovecot.password)
        c.select_folder("INBOX", readonly=True)
        data = c.fetch(c.search(), ["FLAGS", "BODY.PEEK[]"])
        assert [data[u][b"BODY[]"] for u in sorted(data)] == [_crlf(m) for m in a + b]
        assert [(b"\\Seen" in data[u][b"FLAGS"]) for u in sorted(data)] == [False] * 3 + [True] * 2


def test_seed_2000_messages_is_fast(dovecot, mail_user):
    msgs = make_corpus(2000)
    t0 = time.monotonic()
    dovecot.seed(mail_user, msgs)
    assert time.monotonic() - t0 < 5
    p = _pop3s(dovecot, mail_user)
    try:
        assert p.stat()[0] == 2000
    finally:
        p.quit()


# --------------------------------------------------------------------- IMAP

def test_imaps_verified_list_special_use_and_capabilities(dovecot, mail_user):
    dovecot.seed(mail_user, [make_message(1, 300)])
    dovecot.seed(mail_user, [make_message(2, 300)], folder="Archive/2023")
    dovecot.seed(mail_user, [make_message(3, 300)], folder="Sent", flags="S")
    dovecot.seed(mail_user, [make_message(4, 300)], folder="Café & more")
    assert (dovecot.maildir(mail_user) / ".Caf&AOk- &- more" / "cur").is_dir()

    with IMAPClient(dovecot.host, port=dovecot.imaps_port, ssl=True, ssl_context=_ctx(dovecot), timeout=10) as c:
        c.login(mail_user, dovecot.password)
        caps = set(c.capabilities())
        for cap in (b"CONDSTORE", b"QRESYNC", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"IDLE"):
            assert cap in caps
        folders = {name: flags for flags, _delim, name in c.list_folders()}
        assert c.namespace().personal[0][1] == dovecot.separator
        assert "Archive/2023" in folders
        assert "Café & more" in folders
        assert b"\\Sent" in folders["Sent"]
        info = c.select_folder("Archive/2023", readonly=True)
        assert info[b"EXISTS"] == 1
        assert c.fetch("1", ["BODY.PEEK[]"])[1][b"BODY[]"] == _crlf(make_message(2, 300))


# --------------------------------------------------------------------- STARTTLS

def test_starttls_imap_and_pop3(dovecot, mail_user):
    dovecot.seed(mail_user, [make_message(7, 1000)])

    c = imaplib.IMAP4(dovecot.host, dovecot.imap_port, timeout=10)
    assert "STARTTLS" in c.capabilities
    c.starttls(ssl_context=_ctx(dovecot))
    assert isinstance(c.sock, ssl.SSLSocket)
    c.login(mail_user, dovecot.password)
    assert c.select("INBOX")[1] == [b"1"]
    c.logout()

    p = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    assert "STLS" in p.capa()
    p.stls(context=_ctx(dovecot))
    p.user(mail_user)
    p.pass_(dovecot.password)
    assert p.stat()[0] == 1
    p.quit()

    with IMAPClient(dovecot.host, port=dovecot.imap_port, ssl=False, timeout=10) as ic:
        ic.starttls(ssl_context=_ctx(dovecot))
        ic.login(mail_user, dovecot.password)


# --------------------------------------------------------------------- certificates

def test_localhost_name_verifies(dovecot, mail_user):
    p = _pop3s(dovecot, mail_user, host="localhost")
    p.quit()


def test_hostname_mismatch_fails_verification(dovecot, mail_user):
    assert dovecot.mismatch_host == "127.0.0.2"
    # same server, reachable without TLS verification ...
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with socket.create_connection((dovecot.mismatch_host, dovecot.imaps_port), timeout=10) as s:
        with insecure.wrap_socket(s, server_hostname=dovecot.mismatch_host) as t:
            assert t.recv(4).startswith(b"* OK")
    # ... but host-name verification fails
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        poplib.POP3_SSL(dovecot.mismatch_host, dovecot.pop3s_port, context=_ctx(dovecot), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        IMAPClient(dovecot.mismatch_host, port=dovecot.imaps_port, ssl=True, ssl_context=_ctx(dovecot), timeout=10)


def test_untrusted_ca_fails_verification(dovecot):
    ctx = ssl.create_default_context(cafile=str(dovecot.untrusted_ca_file))
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=ctx, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):  # system CAs do not trust it either
        poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=ssl.create_default_context(), timeout=10)


def test_wrong_password_is_rejected_quickly(dovecot, mail_user):
    for _ in range(2):  # no growing auth penalty
        t0 = time.monotonic()
        p = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=_ctx(dovecot), timeout=10)
        p.user(mail_user)
        with pytest.raises(poplib.error_proto, match="AUTH"):
            p.pass_("wrong")
        p.close()
        assert time.monotonic() - t0 < 2


# --------------------------------------------------------------------- lifecycle

def test_stop_kills_master_and_children():
    with Dovecot() as dc:
        user = dc.new_user()
        dc.seed(user, [make_message(1, 200)])
        imap = imaplib.IMAP4(dc.host, dc.imap_port, timeout=10)
        imap.login(user, dc.password)
        imap.select("INBOX")  # a live imap child process
        pids = dc.process_pids()
        master = dc.pid
        assert master in pids and len(pids) >= 5
        t0 = time.monotonic()
        dc.stop()
        assert time.monotonic() - t0 < 5
        assert dc.pid is None
        assert not pid_alive(master)
        assert [p for p in pids if pid_alive(p)] == []
        dc.stop()  # idempotent
        with pytest.raises(OSError):
            socket.create_connection((dc.host, dc.imaps_port), timeout=2).close()
        imap.shutdown()


def test_restart_keeps_ports_and_mail():
    with Dovecot() as dc:
        user = dc.new_user()
        dc.seed(user, [make_message(1, 200)])
        ports = (dc.imaps_port, dc.imap_port, dc.pop3s_port, dc.pop3_port)
        old = dc.pid
        dc.restart()
        assert dc.pid != old and not pid_alive(old)
        assert (dc.imaps_port, dc.imap_port, dc.pop3s_port, dc.pop3_port) == ports
        p = _pop3s(dc, user)
        assert p.stat()[0] == 1
        p.quit()


# --------------------------------------------------------------------- corpus & proxy

def test_corpus_is_deterministic_and_well_formed():
    a = make_corpus(40)
    assert a == make_corpus(40)
    assert a[:10] == make_corpus(10)
    assert all(b"\r" not in m and m.endswith(b"\n") for m in a)
    ids = [re.search(rb"^Message-ID: (\S+)$", m, re.M).group(1) for m in a]
    assert len(set(ids)) == len(ids)
    assert any(re.search(rb"^\.", m.split(b"\n\n", 1)[1], re.M) for i, m in enumerate(a) if i != TINY_INDEX)
    assert any(b"=?" in m.split(b"\n\n", 1)[0] for m in a)
    assert make_corpus(5, seed=2) != make_corpus(5)


def test_proxy_cut_mid_download(dovecot, mail_user):
    big = make_message(1, 2000, attachment=300_000)
    dovecot.seed(mail_user, [big])
    with CutProxy(dovecot.host, dovecot.pop3s_port, cut_after_bytes=60_000, max_faults=1) as px:
        # TLS through the proxy still verifies as 127.0.0.1
        p = _pop3s(dovecot, mail_user, port=px.port)
        with pytest.raises((OSError, poplib.error_proto, EOFError)):
            p.retr(1)
        p.close()
        assert px.cuts == 1 and px.bytes_down == 60_000
        # the next connection is not faulted
        p = _pop3s(dovecot, mail_user, port=px.port)
        assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == _crlf(big)
        p.quit()


def test_proxy_stall_triggers_timeout(dovecot, mail_user):
    dovecot.seed(mail_user, [make_message(1, 50_000)])
    with CutProxy(dovecot.host, dovecot.pop3_port, cut_after_bytes=5_000, stall=True) as px:
        p = poplib.POP3(dovecot.host, px.port, timeout=0.5)
        p.user(mail_user)
        p.pass_(dovecot.password)
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            p.retr(1)
        assert time.monotonic() - t0 < 3
        p.close()


def test_proxy_trickle(dovecot, mail_user):
    with CutProxy(dovecot.host, dovecot.pop3_port, trickle=(4, 0.02)) as px:
        t0 = time.monotonic()
        p = poplib.POP3(dovecot.host, px.port, timeout=10)
        assert p.getwelcome().startswith(b"+OK")  # ~20 bytes in chunks of 4
        assert time.monotonic() - t0 >= 0.08
        p.close()
