"""The IMAP driver and the libraries below it: every private name of imaplib and
imapclient the driver relies on exists on the installed versions, the driver uses no
other, and a fault of theirs on a malformed answer is told from a bug of mailsync's."""

from __future__ import annotations

import imaplib
import importlib
import re
import socket
from pathlib import Path

import imapclient
import pytest
from imapclient.imap4 import IMAP4WithTimeout

from mailsync.drivers import imap
from mailsync.errors import ProtocolError
from mailsync.drivers.imap.errors import LibraryCalls, MalformedAnswer, command_errors
from mailsync.drivers.imap.library import PRIVATE

DRIVER = Path(imap.__file__).parent


class GreetedIMAP4(IMAP4WithTimeout):
    """imaplib over one end of a socket pair whose other end has sent a greeting."""

    def open(self, host="", port=143, timeout=None):
        self.host, self.port = host, port
        self.sock, self._peer = socket.socketpair()
        self._peer.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        self.file = self.sock.makefile("rb")

    def _get_capabilities(self):      # the greeting had them: no command
        self.capabilities = ("IMAP4REV1",)

    def shutdown(self):
        self.file.close()
        self.sock.close()
        self._peer.close()


class GreetedClient(imapclient.IMAPClient):
    def _create_IMAP4(self):
        return GreetedIMAP4("greeted.invalid", 143, None)


@pytest.fixture(scope="module")
def instances():
    """owner name -> an object to look the owner's names up on: live instances for the
    classes (some names are set in __init__), the modules themselves."""
    client = GreetedClient("greeted.invalid")
    found = {"imapclient.IMAPClient": client,
             "imaplib.IMAP4": client._imap,
             "imapclient.imap4.IMAP4WithTimeout": client._imap,
             "imapclient.imapclient": importlib.import_module("imapclient.imapclient"),
             "imaplib": imaplib}
    yield found
    client._imap.shutdown()


def test_every_private_name_the_driver_relies_on_exists_on_the_installed_version(instances):
    assert set(PRIVATE) == set(instances)
    missing = [f"{owner}.{name}" for owner, names in PRIVATE.items() for name in names
               if not hasattr(instances[owner], name)]
    assert not missing, (f"imapclient {imapclient.__version__} lacks {missing}: adapt "
                         "mailsync/imap before widening the pin in pyproject.toml")


def test_the_driver_uses_no_private_name_of_imaplib_or_imapclient_beyond_the_list(instances):
    theirs = {name for owner in instances.values() for name in dir(owner)
              if name.startswith("_") and not name.startswith("__")}
    listed = {name for names in PRIVATE.values() for name in names}
    used = set()
    for path in DRIVER.glob("*.py"):
        used |= set(re.findall(r"\b(_[A-Za-z]\w*)\b", path.read_text())) & theirs
    assert used <= listed, f"not in mailsync/imap/library.py: {sorted(used - listed)}"


def test_the_pin_in_pyproject_holds_the_installed_imapclient():
    pyproject = (DRIVER.parents[2] / "pyproject.toml").read_text()
    pin = re.search(r'"imapclient>=([\d.]+),<([\d.]+)"', pyproject)
    assert pin, "imapclient is not pinned to a range in pyproject.toml"
    low, high = (tuple(int(x) for x in v.split(".")) for v in pin.groups())
    installed = tuple(int(x) for x in imapclient.__version__.split(".")[:len(high)])
    assert low <= installed < high


def test_a_library_fault_on_a_malformed_answer_is_a_protocol_error():
    class Library:
        def select_folder(self, name):
            return int(("not", "a number"))     # what imapclient does with a literal

    lost = []
    with pytest.raises(ProtocolError) as refused:
        with command_errors("account t", "SELECT", lambda: lost.append(1)):
            LibraryCalls(Library()).select_folder("INBOX")
    assert refused.value.exit_code == 65 and "TypeError" in str(refused.value)
    assert lost == [1]                      # the connection is not used again


def test_the_same_fault_in_mailsyncs_own_code_is_a_bug_not_the_servers():
    with pytest.raises(TypeError):
        with command_errors("account t", "SELECT", lambda: None):
            int(("ours", "a bug"))


def test_library_calls_reads_and_sets_plain_attributes_on_the_object_itself():
    class Library:
        untagged_responses = {"FETCH": [b"1"]}
        _encoding = "ascii"

    target = Library()
    wrapped = LibraryCalls(target)
    wrapped._encoding = "utf-8"
    assert target._encoding == "utf-8"
    assert wrapped.untagged_responses is target.untagged_responses
    assert issubclass(MalformedAnswer, imapclient.exceptions.ProtocolError)
