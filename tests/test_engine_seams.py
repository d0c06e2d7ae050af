"""The folder-sync engine depends on the driver contracts alone (mailsync.contracts):
it imports neither the IMAP driver (nor imapclient below it) nor the Maildir driver,
and every operation it asks of the server or of a local folder is one the contract
declares (and so one the contract suite holds both implementations to)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

from mailsync import contracts

ENGINE = ("mailsync.imapsync.folder", "mailsync.imapsync.recovery",
          "mailsync.imapsync.localmoves", "mailsync.imapsync.placeholders",
          "mailsync.imapsync.describe", "mailsync.imapsync.gmail")
DRIVERS = ("imapclient", "imaplib", "mailsync.drivers.imap", "mailsync.drivers.maildir", "sqlite3x")
ROOT = Path(__file__).resolve().parent.parent


def test_the_engine_imports_neither_imapclient_nor_the_maildir_driver():
    probe = ("import sys\n"
             + "".join(f"import {m}\n" for m in ENGINE)
             + f"print(sorted(m for m in {DRIVERS!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]", out


def _members(protocol: type) -> set[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return names


def _used(module: str, holder: str) -> set[str]:
    """The attributes the module's code takes of `holder` (self.remote, remote, ...)."""
    tree = ast.parse(inspect.getsource(sys.modules[module]))
    used = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        target = node.value
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and target.value.id == "self" and target.attr == holder:
            used.add(node.attr)
        elif isinstance(target, ast.Name) and target.id == holder:
            used.add(node.attr)
    return used


def test_the_engine_asks_only_what_the_contracts_declare():
    for module in ENGINE:
        __import__(module)
    remote_ops = _members(contracts.RemoteStore)
    local_ops = _members(contracts.LocalFolder)
    asked_remote = set().union(*(_used(m, "remote") for m in ENGINE))
    asked_local = set().union(*(_used(m, "local") for m in ENGINE), _used(ENGINE[0], "folder"))
    assert asked_remote and asked_remote <= remote_ops, asked_remote - remote_ops
    assert asked_local and asked_local <= local_ops, asked_local - local_ops


def test_both_drivers_offer_every_operation_of_their_contract():
    from mailsync.drivers.imap import ImapSession
    from mailsync.drivers.maildir import Maildir
    from tests.memory_remote import MemorySession
    for driver in (ImapSession, MemorySession):
        missing = {op for op in _members(contracts.RemoteStore)
                   if not hasattr(driver, op) and op not in ("gmail", "can_move", "broken")}
        assert not missing, (driver, missing)
    assert {op for op in _members(contracts.LocalFolder) if not hasattr(Maildir, op)} == set()
