"""ImapSession: one logged-in IMAP connection and every command the sync sends on it.

All message addressing is by UID. A UID set is sent at most MAX_SET_CHARS long; longer
lists are split into several commands. FETCH answers are filtered to the UIDs asked
for: an answer for a UID outside the request (an unsolicited flag update, the "n:*"
quirk) or without a UID is ignored, and a UID asked for but not answered is simply
absent from the result (expunged meanwhile) -- never an error. Malformed answers
(wrong types, missing items for a UID that was answered) raise ProtocolError.

Every command runs inside _guard, which maps imaplib's and imapclient's failures to
MailsyncErrors (errors.py); the session talks to both libraries only through
LibraryCalls, so a fault of theirs on a malformed answer is told from a bug of ours.
"""

from __future__ import annotations

import imaplib
import re
import select
import ssl
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Collection, Iterable, Iterator, NoReturn

from imapclient import IMAPClient
from imapclient import exceptions as imapclient_errors
from imapclient.imapclient import _parse_untagged_response

from mailsync.batching import batches
from mailsync.config import Account
from mailsync.contracts import (Changes, FolderStatus, Namespaces, RemoteMeta, ServerFolder,
                                Sink)
from mailsync.errors import ProtocolError, TemporaryError
from mailsync.headers import parse_message_id, searchable
from mailsync.drivers.imap.errors import LibraryCalls, MissingCapability, command_errors
from mailsync.drivers.imap.parse import (MAX_FOLDERS, MAX_NUMBER, MAX_NUMBER64, copyuid,
                                 delimiter_of, flags_to_letters, idle_event,
                                 letters_to_flags, lf_to_crlf, namespace_prefix,
                                 pairs, parse_answer, parse_fetch, quote, raw_name, response_text,
                                 set_ranges, status_entry, to_datetime, uid_sets,
                                 uids_in, upper_keys, vanished_uids)
from mailsync.drivers.imap.stream import FetchReader, StreamClosed, StreamError, crlf_to_lf
from mailsync.names import decode_mutf7

BODY_BATCH_COUNT = 200           # messages per body FETCH
BODY_BATCH_BYTES = 16 << 20      # bytes per body FETCH (a bigger message goes alone)


class ImapSession:
    """One logged-in IMAP connection; all message operations work on the selected folder."""

    def __init__(self, account: Account, client: IMAPClient) -> None:
        self.account = account
        self.label = f"account {account.name}"
        self._client = LibraryCalls(client)     # every call: its parsing faults told apart
        self._imap = LibraryCalls(client._imap)
        self._broken = False
        self._selected: str | None = None
        self._uidvalidity: dict[str, int] = {}
        self._listed_raw: dict[str, str] = {}   # name -> raw, for names not modified UTF-7
        with self._guard("CAPABILITY", flush=False):   # the login answer may carry them
            caps = client.capabilities()
        self.capabilities = frozenset(c.decode("ascii", "replace").upper()
                                      if isinstance(c, bytes) else str(c).upper() for c in caps)
        self.gmail = "X-GM-EXT-1" in self.capabilities   # labels as folders, X-GM-MSGID
        self.can_move = "MOVE" in self.capabilities
        self.condstore = self.qresync = False
        if "CONDSTORE" in self.capabilities and "ENABLE" in self.capabilities:
            self.condstore = self._enable("CONDSTORE")
        if self.condstore and "QRESYNC" in self.capabilities:
            # VANISHED then tells which UIDs went since a mod-sequence; it also replaces
            # EXPUNGE in unsolicited answers, which the session reads nowhere by count.
            self.qresync = self._enable("QRESYNC")
        with self._guard("LIST"):
            rows = client.list_folders("", "")
        self.delimiter = delimiter_of(rows[0][1]) if rows else None
        self.namespaces = self._namespaces() if "NAMESPACE" in self.capabilities \
            else Namespaces(delimiter=self.delimiter)

    def _namespaces(self) -> Namespaces:
        """The server's NAMESPACE answer; one that is refused or cannot be read counts as
        no namespace (every folder then is the user's, named as the server names it)."""
        with self._guard("NAMESPACE"):
            try:
                found = self._client.namespace()
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                return Namespaces(delimiter=self.delimiter)
            except (imapclient_errors.ProtocolError, ValueError, TypeError, IndexError):
                return Namespaces(delimiter=self.delimiter)
        try:
            entries = [[(namespace_prefix(prefix), delimiter_of(delim))
                        for prefix, delim in (group or ())] for group in tuple(found)[:3]]
        except (TypeError, ValueError):
            return Namespaces(delimiter=self.delimiter)
        personal = entries[0][0] if entries and entries[0] else ("", self.delimiter)
        others = tuple(e for group in entries[1:] for e in group if e[0]) + tuple(
            e for e in (entries[0][1:] if entries else []) if e[0])
        return Namespaces(personal[0], personal[1] or self.delimiter, others)

    def _enable(self, extension: str) -> bool:
        """ENABLE an extension; a server that refuses it just goes without."""
        with self._guard("ENABLE"):
            try:
                typ, _ = self._imap._simple_command("ENABLE", extension)
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                return False
            enabled = b" ".join(x for x in self._imap.untagged_responses.get("ENABLED", [])
                                if isinstance(x, bytes))
        return typ == "OK" and extension.encode() in enabled.upper().split()

    def __repr__(self) -> str:
        return f"<ImapSession {self.label} {self.account.host}:{self.account.port}>"

    # Error mapping ------------------------------------------------------------------------
    @contextmanager
    def _guard(self, what: str, flush: bool = True) -> Iterator[None]:
        """Run a command: refused at once on a lost connection, stale untagged answers
        flushed first, every failure mapped (errors.command_errors)."""
        if self._broken:
            raise TemporaryError(f"{self.label}: the connection was lost earlier",
                                 "run again")
        if flush:                         # stale answers must not leak into this one
            ur = self._imap.untagged_responses
            for key in [k for k in ur if k != "READ-ONLY"]:
                del ur[key]
        with command_errors(self.label, what, self._break):
            yield

    def _break(self) -> None:
        self._broken = True
        close_quietly(self._client)

    @property
    def broken(self) -> bool:
        """The connection is lost or no longer usable (a refusal leaves it usable)."""
        return self._broken

    def _uid_command(self, name: str, *args: str, ok_codes: tuple[str, ...] = ()
                     ) -> tuple[str, list]:
        """Send UID <name> args; NO raises unless its text has one of ok_codes."""
        if self._selected is None:
            raise RuntimeError(f"UID {name} without a selected folder")
        tag = self._imap._command("UID", name, *args)
        typ, data = self._imap._command_complete("UID", tag)
        if typ != "OK":
            text = response_text(data)
            if not any(code in text for code in ok_codes):
                raise imaplib.IMAP4.error(f"UID {name} failed: {text}")
        return typ, data

    # Folders ------------------------------------------------------------------------------
    def list_folders(self, with_status: bool = False) -> list[ServerFolder]:
        """Every folder; with_status and a server with LIST-STATUS (RFC 5819): each
        selectable one with its STATUS too, in the same round trip."""
        if with_status and "LIST-STATUS" in self.capabilities:
            return self._list_status()
        with self._guard("LIST"):
            rows = self._client.list_folders("", "*")
        return self._folders(rows)

    def _folders(self, rows: list) -> list[ServerFolder]:
        if len(rows) > MAX_FOLDERS:
            raise ProtocolError(f"{self.label}: the server listed more than {MAX_FOLDERS} "
                                "folders", "the server is misbehaving; report it")
        listed = [self._folder(row) for row in rows]
        for f in listed:
            if not f.name_ok:
                self.remember_raw(f.name, f.raw)
        return listed

    def remember_raw(self, name: str, raw: str) -> None:
        """Name the folder `name` on the wire as `raw`, as the server listed it (a name
        that is not modified UTF-7; raw 8-bit names are sent as the same UTF-8 bytes)."""
        try:
            if raw_name(name) == raw:
                return
        except ValueError:
            pass
        self._listed_raw[name] = raw
        if not raw.isascii():
            self._imap._encoding = "utf-8"

    @staticmethod
    def unsendable(raw: str) -> bool:
        """A name that cannot be sent back: mailsync sends names as quoted strings, which
        cannot hold CR or LF, and no IMAP string holds NUL."""
        return any(c in raw for c in "\r\n\x00")

    def _raw(self, folder: ServerFolder | str) -> str:
        """The wire name: a listed folder's own spelling, else the name encoded."""
        if isinstance(folder, str) and folder in self._listed_raw:
            return self._listed_raw[folder]
        return raw_name(folder)

    def _list_status(self) -> list[ServerFolder]:
        what = "MESSAGES UIDNEXT UIDVALIDITY" + (" HIGHESTMODSEQ" if self.condstore else "")
        with self._guard("LIST RETURN (STATUS)"):
            typ, data = self._imap._simple_command("LIST", '""', '"*"', "RETURN",
                                                   f"(STATUS ({what}))")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"LIST failed: {response_text(data)}")
            statuses = self._imap.untagged_responses.pop("STATUS", [])
            typ, data = self._imap._untagged_response(typ, data, "LIST")
            parsed = parse_answer([d for d in data if d not in (b"", None)] or [b""])
            rows = [parsed[i:i + 3] for i in range(0, len(parsed), 3)]
            by_raw = {}
            for entry in statuses:
                raw, values = status_entry(entry)
                if raw is not None:
                    by_raw[raw] = values
        folders = self._folders(rows)
        return [replace(f, status=self._listed_status(by_raw[f.raw]))
                if f.selectable and f.raw in by_raw else f for f in folders]

    def _listed_status(self, resp: dict) -> FolderStatus | None:
        """A LIST-STATUS line's values as a FolderStatus; None when one is missing (the
        folder is then simply SELECTed)."""
        values = upper_keys(resp)
        if any(values.get(k) is None for k in (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES")):
            return None
        return self._folder_status(values)

    def _folder(self, row: Any) -> ServerFolder:
        try:
            flags, delim, raw = row
            if isinstance(raw, int):
                raw = str(raw)
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "surrogateescape")
            if not isinstance(raw, str) or not isinstance(flags, tuple):
                raise TypeError
            flagset = frozenset(f.decode("ascii", "replace") if isinstance(f, bytes) else str(f)
                                for f in flags)
            delimiter = delimiter_of(delim)
        except (TypeError, ValueError):
            raise ProtocolError(f"{self.label}: malformed LIST entry {row!r:.200}",
                                "the server is misbehaving; report it") from None
        try:
            name, ok = decode_mutf7(raw), True
        except ValueError:
            name, ok = raw, False
        if name.upper() == "INBOX":
            name = "INBOX"
        lower = {f.lower() for f in flagset}
        return ServerFolder(name=name, raw=raw, delimiter=delimiter, flags=flagset,
                            selectable=not lower & {"\\noselect", "\\nonexistent"},
                            name_ok=ok)

    def select(self, folder: ServerFolder | str, readonly: bool = False) -> FolderStatus:
        """SELECT (EXAMINE when readonly); CONDSTORE is enabled when the server has it."""
        raw = self._raw(folder)
        self._selected = None
        with self._guard(f"SELECT {raw}"):
            resp = self._client.select_folder(raw, readonly)
        self._selected = raw
        values = {k.upper() if isinstance(k, bytes) else k: v for k, v in resp.items()}
        uidvalidity = self._number(values.get(b"UIDVALIDITY"), "UIDVALIDITY", minimum=1)
        exists = self._number(values.get(b"EXISTS"), "EXISTS")
        if values.get(b"UIDNEXT") is not None:
            uidnext = self._number(values.get(b"UIDNEXT"), "UIDNEXT", minimum=1)
        else:
            with self._guard("FETCH"):
                found = self._uid_fetch("*", "(UID)") if exists else {}
            uidnext = max(found, default=0) + 1
        modseq = values.get(b"HIGHESTMODSEQ") if self.condstore else None
        status = FolderStatus(uidvalidity, uidnext, exists,
                              None if modseq is None else self._number(modseq, "HIGHESTMODSEQ",
                                                                 maximum=MAX_NUMBER64))
        self._uidvalidity[raw] = uidvalidity
        return status

    def status(self, folder: ServerFolder | str) -> FolderStatus:
        raw = self._raw(folder)
        what = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"] + (["HIGHESTMODSEQ"] if self.condstore
                                                         else [])
        with self._guard(f"STATUS {raw}"):
            resp = self._client.folder_status(raw, what)
        status = self._folder_status(upper_keys(resp))
        self._uidvalidity[raw] = status.uidvalidity
        return status

    def _folder_status(self, values: dict) -> FolderStatus:
        """A STATUS answer's values (keys upper-case bytes); ProtocolError if malformed."""
        modseq = values.get(b"HIGHESTMODSEQ")
        return FolderStatus(
            uidvalidity=self._number(values.get(b"UIDVALIDITY"), "UIDVALIDITY", minimum=1),
            uidnext=self._number(values.get(b"UIDNEXT"), "UIDNEXT", minimum=1),
            exists=self._number(values.get(b"MESSAGES"), "MESSAGES"),
            highestmodseq=None if modseq is None else self._number(modseq, "HIGHESTMODSEQ",
                                                                   maximum=MAX_NUMBER64))

    def create_folder(self, name: str) -> None:
        """CREATE name (UTF-8, server delimiter), sent as modified UTF-7. Exists: fine."""
        raw = self._raw(name)
        with self._guard(f"CREATE {raw}"):
            try:
                self._client.create_folder(raw)
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort) or "[ALREADYEXISTS]" not in str(exc):
                    raise

    # Metadata -----------------------------------------------------------------------------
    def fetch_meta(self, uids: str | Iterable[int] = "1:*", with_message_id: bool = False,
                   with_date: bool = False) -> dict[int, RemoteMeta]:
        """Flags, size (MODSEQ; Message-ID, INTERNALDATE when asked) of the selected
        folder. The sync needs no dates: asking for them makes a Maildir server stat
        every message."""
        items = ["UID", "FLAGS", "RFC822.SIZE"] + (["INTERNALDATE"] if with_date else [])
        if self.condstore:
            items.append("MODSEQ")
        if self.gmail:
            items.append("X-GM-MSGID")
        if with_message_id:
            items.append("BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
        out: dict[int, RemoteMeta] = {}
        for uidset in self._sets(uids):
            with self._guard("FETCH"):
                answers = self._uid_fetch(uidset, "(" + " ".join(items) + ")")
            for uid, data in answers.items():
                out[uid] = self._meta(uid, data, with_message_id)
        return out

    def search_all(self) -> set[int]:
        """Every UID in the selected folder (UID SEARCH ALL)."""
        with self._guard("SEARCH"):
            self._uid_command("SEARCH", "ALL")
            answers = self._imap.untagged_responses.get("SEARCH", [])
        return {int(tok) for a in answers if isinstance(a, bytes)
                for tok in a.split(b"(")[0].split() if tok.isdigit() and int(tok) > 0}

    def fetch_changed(self, since_modseq: int) -> dict[int, RemoteMeta]:
        """Messages whose flags changed after since_modseq (CONDSTORE). Expunges are not
        reported here: compare the UID list (fetch_meta or a search) for those."""
        if not self.condstore:
            raise MissingCapability(f"{self.label}: the server lacks CONDSTORE",
                                    "use fetch_meta instead")
        items = "(UID FLAGS RFC822.SIZE MODSEQ" + (" X-GM-MSGID)" if self.gmail else ")")
        with self._guard("FETCH CHANGEDSINCE"):
            answers = self._uid_fetch("1:*", items, f"(CHANGEDSINCE {int(since_modseq)})")
        return {uid: self._meta(uid, data, False) for uid, data in answers.items()}

    def changes_since(self, since_modseq: int, candidates: Collection[int]) -> Changes:
        """UID FETCH CHANGEDSINCE, with the VANISHED modifier where QRESYNC is enabled:
        the server's "* VANISHED (EARLIER) set" names the UIDs expunged since then."""
        if not self.qresync:
            return Changes(self.fetch_changed(since_modseq), None)
        items = "(UID FLAGS RFC822.SIZE MODSEQ" + (" X-GM-MSGID)" if self.gmail else ")")
        with self._guard("FETCH CHANGEDSINCE VANISHED"):
            self._imap.untagged_responses.pop("VANISHED", None)
            answers = self._uid_fetch("1:*", items,
                                      f"(CHANGEDSINCE {int(since_modseq)} VANISHED)")
            said = self._imap.untagged_responses.pop("VANISHED", [])
        changed = {uid: self._meta(uid, data, False) for uid, data in answers.items()}
        try:
            vanished = vanished_uids(said, candidates)
        except ValueError:
            self._garbage("VANISHED", said)
        return Changes(changed, vanished)

    def _meta(self, uid: int, data: dict[bytes, Any], with_message_id: bool) -> RemoteMeta:
        flags, size = data.get(b"FLAGS"), data.get(b"RFC822.SIZE")
        if not isinstance(flags, tuple) or not all(isinstance(f, (bytes, int)) for f in flags):
            self._garbage(f"FLAGS of UID {uid}", flags)
        if not self._number_ok(size, 0, MAX_NUMBER64):
            self._garbage(f"RFC822.SIZE of UID {uid}", size)
        letters, keywords = flags_to_letters(flags)
        modseq = data.get(b"MODSEQ")
        if (isinstance(modseq, tuple) and len(modseq) == 1
                and self._number_ok(modseq[0], 0, MAX_NUMBER64)):
            modseq = modseq[0]
        elif modseq is not None:
            self._garbage(f"MODSEQ of UID {uid}", modseq)
        message_id = None
        if with_message_id:
            header = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER.FIELDS")),
                          None)
            if header is not None and not isinstance(header, bytes):
                self._garbage(f"Message-ID header of UID {uid}", header)
            message_id = parse_message_id(header)
        gm_msgid = data.get(b"X-GM-MSGID")
        if gm_msgid is not None and not self._number_ok(gm_msgid, 1, (1 << 64) - 1):
            self._garbage(f"X-GM-MSGID of UID {uid}", gm_msgid)
        return RemoteMeta(uid=uid, flags=letters, keywords=keywords, size=size,
                          internaldate=to_datetime(data.get(b"INTERNALDATE"))
                          if b"INTERNALDATE" in data else None,
                          message_id=message_id, modseq=modseq, gm_msgid=gm_msgid)

    def _garbage(self, what: str, value: Any) -> NoReturn:
        raise ProtocolError(f"{self.label}: the server sent a malformed {what}: "
                            f"{value!r:.100}", "the server is misbehaving; report it")

    @staticmethod
    def _number_ok(value: Any, minimum: int, maximum: int = MAX_NUMBER) -> bool:
        return (isinstance(value, int) and not isinstance(value, bool)
                and minimum <= value <= maximum)

    def _number(self, value: Any, what: str, minimum: int = 0,
                maximum: int = MAX_NUMBER) -> int:
        if not self._number_ok(value, minimum, maximum):
            self._garbage(what, value)
        return value

    def _sets(self, uids: str | Iterable[int]) -> list[str]:
        if isinstance(uids, str):
            set_ranges(uids)            # validates
            return [uids]
        return uid_sets(uids)

    def _uid_fetch(self, uidset: str, items: str, modifiers: str | None = None
                   ) -> dict[int, dict[bytes, Any]]:
        """UID FETCH -> {uid: {ITEM: value}} for the UIDs inside uidset, in arrival order.

        Runs inside a _guard (which flushed older untagged answers). NO
        [EXPUNGEISSUED] still delivers what the server did send."""
        args = [uidset, items] + ([modifiers] if modifiers else [])
        self._uid_command("FETCH", *args, ok_codes=("[EXPUNGEISSUED]",))
        raw = self._imap.untagged_responses.pop("FETCH", [])
        parsed = parse_fetch(raw) if raw else ()
        ranges = set_ranges(uidset)
        out: dict[int, dict[bytes, Any]] = {}
        for seq, attrs in pairs(parsed):
            if not isinstance(seq, int) or not isinstance(attrs, tuple):
                raise imapclient_errors.ProtocolError(f"bad FETCH response {seq!r:.50}")
            entry: dict[bytes, Any] = {}
            for key, value in pairs(attrs):
                if not isinstance(key, bytes):
                    raise imapclient_errors.ProtocolError(f"bad FETCH item {key!r:.50}")
                entry[key.upper()] = value
            uid = entry.get(b"UID")
            if uid is None:
                continue                 # an unsolicited update without UID: ignore
            if not self._number_ok(uid, 1):
                raise imapclient_errors.ProtocolError(f"bad UID {uid!r:.50}")
            if any(lo <= uid <= hi for lo, hi in ranges):
                out.setdefault(uid, {}).update(entry)
        return out

    # Bodies -------------------------------------------------------------------------------
    def fetch_bodies(self, uids: Iterable[int], sink_for: Callable[[int], Sink],
                     done: Callable[[int, int], None], headers_only: bool = False,
                     sizes: dict[int, int] | None = None) -> set[int]:
        """Download messages (BODY.PEEK: \\Seen is never set) with LF line endings.

        For each message that arrives: sink_for(uid).write(data), then done(uid, len).
        Batches hold at most BODY_BATCH_COUNT messages and about BODY_BATCH_BYTES (sizes
        from the argument, else asked for first). A UID the server no longer has is
        skipped. Returns the UIDs delivered."""
        wanted = sorted(set(uids))
        if not wanted:
            return set()
        known = dict(sizes or {})
        if not headers_only and any(u not in known for u in wanted):
            missing = [u for u in wanted if u not in known]
            for uidset in uid_sets(missing):
                with self._guard("FETCH"):
                    answers = self._uid_fetch(uidset, "(UID RFC822.SIZE)")
                for uid, data in answers.items():
                    known[uid] = self._number(data.get(b"RFC822.SIZE"), "RFC822.SIZE",
                                              maximum=MAX_NUMBER64)
            wanted = [u for u in wanted if u in known]
        section = b"BODY[HEADER]" if headers_only else b"BODY[]"
        items = "(UID BODY.PEEK[HEADER])" if headers_only else "(UID BODY.PEEK[])"
        delivered: set[int] = set()
        size_of = (lambda uid: 0) if headers_only else (lambda uid: known.get(uid, 0))
        for batch in batches(wanted, size_of, BODY_BATCH_COUNT, BODY_BATCH_BYTES):
            for uidset in uid_sets(batch):
                if not headers_only:
                    delivered |= self._stream_bodies(uidset, set(batch), sink_for, done)
                    continue
                with self._guard("FETCH"):
                    answers = self._uid_fetch(uidset, items)
                for uid in list(answers):
                    body = answers.pop(uid).get(section)
                    if body is None:
                        continue         # answered without the body: gone meanwhile
                    if not isinstance(body, bytes):
                        self._garbage(f"body of UID {uid}", type(body).__name__)
                    data = crlf_to_lf(body)
                    del body
                    sink_for(uid).write(data)
                    done(uid, len(data))
                    delivered.add(uid)
        return delivered

    def _stream_bodies(self, uidset: str, wanted: set[int], sink_for: Callable[[int], Sink],
                       done: Callable[[int, int], None]) -> set[int]:
        """One UID FETCH of whole bodies, each streamed to its sink as it arrives."""
        delivered: set[int] = set()

        def counted(uid: int, nbytes: int) -> None:
            delivered.add(uid)
            done(uid, nbytes)

        with self._guard("FETCH"):
            tag = self._imap._command("UID", "FETCH", uidset, "(UID BODY.PEEK[])")
            try:
                status, text = FetchReader(self._imap.readline, self._imap.read, tag).run(
                    wanted, sink_for, counted)
            except StreamClosed as exc:
                self._break()
                raise TemporaryError(f"{self.label}: FETCH: the connection was lost: {exc}",
                                     "run again") from None
            except StreamError as exc:
                self._break()
                raise ProtocolError(f"{self.label}: FETCH: the server broke the protocol: "
                                    f"{exc}", "report it to the server's admin") from None
            except BaseException:
                self._break()   # mid-answer: the connection cannot be used any more
                raise
            finally:
                self._imap.tagged_commands.pop(tag, None)
            if status != b"OK" and b"[EXPUNGEISSUED]" not in text:
                raise imaplib.IMAP4.error(f"UID FETCH failed: {text.decode('utf-8', 'replace')}")
        return delivered

    # Changes ------------------------------------------------------------------------------
    def append(self, folder: ServerFolder | str, message: bytes,
               flags: Iterable[str] = frozenset(), internaldate: datetime | None = None
               ) -> int | None:
        """APPEND (CRLF line endings, mapped flags); the new UID from APPENDUID, or None
        when the server has no UIDPLUS or the folder's UIDVALIDITY is not the one known."""
        raw = self._raw(folder)
        with self._guard(f"APPEND {raw}"):
            reply = self._client.append(raw, lf_to_crlf(message), letters_to_flags(flags),
                                        internaldate)
        m = re.search(r"\[APPENDUID (\d+) (\d+)\]", response_text([reply]), re.IGNORECASE)
        if m is None:
            return None
        validity, uid = int(m.group(1)), int(m.group(2))
        if self._uidvalidity.get(raw, validity) != validity or not 0 < uid <= MAX_NUMBER:
            return None
        return uid

    def find_by_message_id(self, message_id: str) -> list[int]:
        """UIDs in the selected folder whose Message-ID is exactly message_id.

        An empty or non-ASCII id finds nothing (it cannot be searched for safely)."""
        message_id = message_id.strip()
        if not searchable(message_id):
            return []
        with self._guard("SEARCH"):
            self._uid_command("SEARCH", "HEADER", "MESSAGE-ID", quote(message_id))
            answers = self._imap.untagged_responses.get("SEARCH", [])
        found = sorted({int(tok) for a in answers if isinstance(a, bytes)
                        for tok in a.split(b"(")[0].split() if tok.isdigit() and int(tok) > 0})
        if not found:
            return []
        metas = self.fetch_meta(found, with_message_id=True)   # HEADER search is substring
        return [uid for uid in found if uid in metas and metas[uid].message_id == message_id]

    def add_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        self._store_flags(uids, "+FLAGS.SILENT", letters_to_flags(letters))

    def remove_flags(self, uids: Iterable[int], letters: Iterable[str]) -> None:
        self._store_flags(uids, "-FLAGS.SILENT", letters_to_flags(letters))

    def _store_flags(self, uids: Iterable[int], op: str, flags: list[str]) -> None:
        if not flags:
            return
        for uidset in uid_sets(uids):
            with self._guard("STORE"):
                self._uid_command("STORE", uidset, op, "(" + " ".join(flags) + ")",
                                  ok_codes=("[EXPUNGEISSUED]",))

    def expunge(self, uids: Iterable[int]) -> set[int]:
        """Mark exactly these UIDs \\Deleted and expunge them (see expunge_marked);
        returns the UIDs left marked."""
        self.mark_deleted(uids)
        return self.expunge_marked(uids)

    def mark_deleted(self, uids: Iterable[int]) -> None:
        """The first half of expunge(): STORE +FLAGS \\Deleted on exactly these UIDs."""
        uids = sorted(set(uids))
        if uids:
            self._store_flags(uids, "+FLAGS.SILENT", ["\\Deleted"])

    def expunge_marked(self, uids: Iterable[int]) -> set[int]:
        """The second half of expunge(): remove exactly these (marked) UIDs.

        With UIDPLUS, UID EXPUNGE of exactly them. Without it a plain EXPUNGE would also
        remove whatever other clients marked \\Deleted: it is sent only when no other
        message of the folder is marked (UID SEARCH DELETED); else nothing is expunged
        and these UIDs are returned, left marked for a later run."""
        uids = sorted(set(uids))
        if not uids:
            return set()
        if "UIDPLUS" in self.capabilities:
            for uidset in uid_sets(uids):
                with self._guard("UID EXPUNGE"):
                    self._uid_command("EXPUNGE", uidset)
            return set()
        if not self.expunge_is_exact(uids):
            return set(uids)
        with self._guard("EXPUNGE"):
            typ, data = self._imap._simple_command("EXPUNGE")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"EXPUNGE failed: {response_text(data)}")
        return set()

    def expunge_is_exact(self, uids: Iterable[int]) -> bool:
        """Whether expunging these UIDs of the selected folder removes nothing else: with
        UIDPLUS always; without, when no other message there is marked \\Deleted."""
        if "UIDPLUS" in self.capabilities:
            return True
        with self._guard("SEARCH DELETED"):
            self._uid_command("SEARCH", "DELETED")
            answers = self._imap.untagged_responses.get("SEARCH", [])
        marked = {int(tok) for a in answers if isinstance(a, bytes)
                  for tok in a.split(b"(")[0].split() if tok.isdigit() and int(tok) > 0}
        return marked <= set(uids)

    def move(self, uids: Iterable[int], dest: ServerFolder | str) -> dict[int, int] | None:
        """UID MOVE (or UID COPY + expunge(): ask expunge_is_exact first without UIDPLUS);
        {old uid: new uid} from COPYUID, or None."""
        uids = sorted(set(uids))
        if not uids:
            return {}
        raw = self._raw(dest)
        has_move = "MOVE" in self.capabilities
        mapping: dict[int, int] = {}
        seen_copyuid = False
        for uidset in uid_sets(uids):
            with self._guard("MOVE" if has_move else "COPY"):
                self._uid_command("MOVE" if has_move else "COPY", uidset, quote(raw))
                codes = [response_text([c]) for c in self._imap.untagged_responses.get("COPYUID", [])]
            for text in codes:           # imaplib files [COPYUID ..] of OK lines here
                pairs = copyuid(text)
                if pairs is not None:
                    seen_copyuid = True
                    mapping.update(pairs)
            if not has_move:
                self.expunge(uids_in(uidset))
        return mapping if seen_copyuid else None

    # Waiting for changes (watch) ----------------------------------------------------------
    def notify_set(self, selected: bool = False) -> bool:
        """NOTIFY (RFC 5465) for every personal folder: new, expunged and re-flagged
        messages and new or renamed folders, reported while idle, so one connection
        watches them all; with selected, the selected folder's changes come as they do
        in IDLE (Dovecot 2.3 stops reporting other folders' after some hundreds of
        changes on one connection, never the selected one's). False when the server
        lacks NOTIFY or refuses the request."""
        if "NOTIFY" not in self.capabilities:
            return False
        imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))
        events = "(MessageNew MessageExpunge FlagChange)"
        spec = (f"(selected {events}) " if selected else "") + \
            "(personal (MessageNew MessageExpunge FlagChange MailboxName))"
        with self._guard("NOTIFY"):
            try:
                typ, _ = self._imap._simple_command("NOTIFY", "SET", spec)
            except imaplib.IMAP4.error as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                return False
        return typ == "OK"

    def idle_start(self) -> None:
        """IDLE (RFC 2177) in the selected folder, or with NOTIFY in any state."""
        self._need("IDLE", "watch waits for the server's changes with IDLE")
        with self._guard("IDLE"):
            self._client.idle()

    def idle_wait(self, timeout: float) -> list[tuple[str, str | None]]:
        """What the server reported during IDLE within timeout seconds, as (what,
        folder) pairs: ("EXISTS", None), ("FETCH", None), ("STATUS", "Sent"), ("LIST",
        "New") ...; [] when nothing. A BYE (the server shutting down) raises
        TemporaryError like a dropped connection."""
        with self._guard("IDLE", flush=False):
            responses = self._idle_check(timeout)
            events = [idle_event(r) for r in responses]
        if any(what == "BYE" for what, _ in events):
            self._break()
            raise TemporaryError(f"{self.label}: the server ended the connection (BYE)",
                                 "reconnect")
        return [e for e in events if e[0] != "OK"]

    def _idle_check(self, timeout: float) -> list:
        """The responses the server sent during IDLE, each read whole (literals too) on
        the socket as it is, blocking with the account's timeout once data is there.

        Not imapclient's idle_check: it reads a non-blocking TLS socket line by line,
        and a response split across TLS records loses its first part (the buffered
        reader drops it when the read raises "want read"); it also takes a closed
        connection for "nothing more to read" and would poll a dead socket."""
        sock = self._client.socket()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)

        def waiting(ms: int) -> bool:
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
            return pending > 0 or bool(poller.poll(ms))

        if not waiting(max(0, int(timeout * 1000))):
            return []
        responses = []
        while True:
            line = self._imap._get_response()   # EOF raises: the connection is gone
            if line is not None:
                try:
                    responses.append(_parse_untagged_response(line))
                except Exception:   # not one we can read: still a sign of change
                    responses.append((b"OTHER",))
            if not waiting(0):
                break
        ur = self._imap.untagged_responses   # read here, not kept: IDLE may last days
        for key in [k for k in ur if k != "READ-ONLY"]:
            del ur[key]
        return responses

    def idle_done(self) -> None:
        """End IDLE (DONE) and wait for its tagged answer."""
        with self._guard("DONE", flush=False):
            self._client.idle_done()

    def noop(self) -> None:
        with self._guard("NOOP"):
            self._client.noop()

    def _need(self, capability: str, why: str) -> None:
        if capability not in self.capabilities:
            raise MissingCapability(f"{self.label}: server lacks {capability}: {why}",
                                    "this server cannot be synced safely in this way")

    # Ending -------------------------------------------------------------------------------
    def logout(self) -> None:
        """LOGOUT, best effort: nothing is pending on an IMAP server at this point."""
        if self._broken:
            return
        self._broken = True
        try:
            self._client.logout()
        except Exception:
            pass
        close_quietly(self._client)

    def abort(self) -> None:
        """Close the connection without LOGOUT."""
        self._broken = True
        close_quietly(self._client)


def close_quietly(client: Any) -> None:
    """Close a client's connection, whatever state it is in."""
    if client is None:
        return
    try:
        client.shutdown()
    except Exception:
        pass
