"""Pure IMAP response parsers and value conversions: imaplib's and imapclient's raw
answers to plain values, Maildir letters to IMAP flags and back, UID sets.

No IO and no session state: every function here takes what the server sent (or what
will be sent) and returns a value, so each is tested on its own, and fuzzed
(tests/test_fuzz.py). A malformed answer raises imapclient's ProtocolError or
ValueError, which the session's error mapping turns into exit 65.
"""

from __future__ import annotations

import bisect
import itertools
import re
from datetime import datetime, timezone
from typing import Any, Collection, Iterable, Iterator

from imapclient import exceptions as imapclient_errors
from imapclient.datetime_util import parse_to_datetime
from imapclient.response_parser import parse_response

from mailsync.contracts import ServerFolder
from mailsync.drivers.imap.errors import from_library
from mailsync.names import decode_mutf7, encode_mutf7

MAX_SET_CHARS = 8000             # longest UID set sent in one command
MAX_FOLDERS = 100_000            # a LIST longer than this is refused as garbage
MAX_NUMBER = (1 << 32) - 1       # UIDs, UIDVALIDITY, UIDNEXT, counts: 32 bits (RFC 3501)
MAX_NUMBER64 = (1 << 63) - 1     # RFC822.SIZE (RFC 9051 number64), mod-sequences (RFC 7162)

# Maildir letter <-> IMAP flag, the only flags mailsync ever sets or clears.
LETTER_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                "S": "\\Seen", "T": "\\Deleted"}
_FLAG_LETTERS = {flag.lower(): letter for letter, flag in LETTER_FLAGS.items()}
_SESSION_FLAGS = {"\\recent"}    # per-session, not a property of the message

# imapclient's parser, a fault of its own on a malformed answer told from a bug of ours
parse_answer = from_library(parse_response)


def flags_to_letters(flags: Iterable[bytes | str | int]) -> tuple[frozenset[str], frozenset[str]]:
    """IMAP flags -> (Maildir letters, other keywords). \\Recent is dropped."""
    letters, keywords = set(), set()
    for flag in flags:
        if isinstance(flag, bytes):
            flag = flag.decode("utf-8", "replace")
        elif isinstance(flag, int):      # imapclient parses an all-digit keyword as int
            flag = str(flag)
        elif not isinstance(flag, str):
            raise TypeError(f"flag must be bytes or str, not {type(flag).__name__}")
        low = flag.lower()
        if low in _FLAG_LETTERS:
            letters.add(_FLAG_LETTERS[low])
        elif low not in _SESSION_FLAGS and flag:
            keywords.add(flag)
    return frozenset(letters), frozenset(keywords)


def letters_to_flags(letters: Iterable[str]) -> list[str]:
    """Maildir letters -> IMAP flags in letter order; letters outside DFPRST are ignored."""
    return [LETTER_FLAGS[ch] for ch in sorted(set("".join(letters))) if ch in LETTER_FLAGS]


def lf_to_crlf(data: bytes) -> bytes:
    """Every line ending as CRLF; an existing CRLF is kept as it is, never doubled."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def uid_sets(uids: Iterable[int], limit: int | None = None) -> list[str]:
    """Sorted, de-duplicated UIDs as compact sets ("1:5,9"), each at most limit chars
    (default MAX_SET_CHARS)."""
    limit = limit or MAX_SET_CHARS
    ordered = sorted(set(uids))
    if any(not isinstance(u, int) or isinstance(u, bool) or u <= 0 for u in ordered):
        raise ValueError("UIDs must be positive integers")
    runs: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        runs.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    out, current = [], ""
    for run in runs:
        if current and len(current) + 1 + len(run) > limit:
            out.append(current)
            current = ""
        current = f"{current},{run}" if current else run
    if current:
        out.append(current)
    return out


_SET_RE = re.compile(r"(\d+|\*)(?::(\d+|\*))?(?:,(\d+|\*)(?::(\d+|\*))?)*")


def set_ranges(text: str) -> list[tuple[int, float]]:
    """A UID set string -> inclusive (low, high) ranges.

    '*' is taken as unbounded, so "n:*" admits only UIDs >= n (not the RFC's "largest
    UID", which makes "n:*" return the last message even when its UID is below n)."""
    if not _SET_RE.fullmatch(text):
        raise ValueError(f"not a UID set: {text!r}")
    inf = float("inf")
    ranges = []
    for part in text.split(","):
        a, _, b = part.partition(":")
        ends = [inf if x == "*" else int(x) for x in (a, b or a)]
        finite = [e for e in ends if e != inf]
        lo = int(min(finite, default=1))
        hi = inf if inf in ends else max(ends)
        ranges.append((lo, hi))
    return ranges


def redact(line: str) -> str:
    """Cut everything after LOGIN or AUTHENTICATE from a client line."""
    m = re.search(r"\b(LOGIN|AUTHENTICATE)\b", line, re.IGNORECASE)
    return line if m is None else line[:m.end()] + " <redacted>"


def to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, bytes):
        return None
    try:
        dt = parse_to_datetime(value, normalise=False)
        offset = dt.utcoffset()
        return dt.replace(tzinfo=timezone(offset) if offset is not None else timezone.utc)
    except (ValueError, OverflowError):     # e.g. day 2147483648, offset -65535
        return None


def quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def raw_name(folder: ServerFolder | str) -> str:
    if isinstance(folder, ServerFolder):
        return folder.raw
    return "INBOX" if folder.upper() == "INBOX" else encode_mutf7(folder)


# A FETCH answer made only of `KEY number`, `KEY (atoms)`, `KEY "plain string"` and
# `KEY NIL` items: the metadata of every message looks like this, and reading it with
# two regexes costs a tenth of imapclient's generic lexer and parser.
_SIMPLE_FETCH = re.compile(rb"(0|[1-9][0-9]*) \((.*)\)\Z", re.S)
_SIMPLE_ITEM = re.compile(
    rb"(?!NIL )([A-Za-z][A-Za-z0-9.]*) "
    rb"(?:(0|[1-9][0-9]*)(?![^ ])"                    # number
    rb"|\(([^\x00-\x1f()\"{}%\[\]]*)\)"            # list of atoms
    rb"|\"([^\x00-\x1f\"\\]*)\""                     # quoted string without escapes
    rb"|(NIL)(?![^ ]))")


def vanished_uids(said: list, candidates: Collection[int]) -> frozenset[int]:
    """The candidates inside the UID sets of VANISHED answers ("(EARLIER) 3:5,9", as
    imaplib files them); ValueError when a set cannot be read."""
    ranges: list[tuple[int, float]] = []
    for answer in said:
        text = answer.decode("ascii", "replace") if isinstance(answer, bytes) else ""
        text = re.sub(r"^\(EARLIER\)\s*", "", text.strip(), flags=re.I)
        ranges.extend(set_ranges(text))
    ranges.sort()
    lows = [lo for lo, _ in ranges]
    highs = list(itertools.accumulate((hi for _, hi in ranges), max))
    return frozenset(uid for uid in candidates
                     if (i := bisect.bisect_right(lows, uid)) and highs[i - 1] >= uid)


def parse_fetch(raw: list) -> tuple:
    """imaplib's untagged FETCH data -> imapclient's parse_response() result.

    Lines of simple items are read by parse_simple_fetch; anything else (literals,
    nested lists, escaped strings) goes to imapclient's full parser."""
    simple = parse_simple_fetch(raw)
    return simple if simple is not None else parse_answer(raw)


def parse_simple_fetch(raw: list) -> tuple | None:
    """The parse of lines made only of simple items (see _SIMPLE_ITEM), else None."""
    out: list[Any] = []
    item = _SIMPLE_ITEM.match
    for entry in raw:
        if not isinstance(entry, bytes):
            return None
        m = _SIMPLE_FETCH.match(entry)
        if m is None:
            return None
        body, pos, items = m.group(2), 0, []
        end = len(body)
        while pos < end:
            it = item(body, pos)
            if it is None:
                return None
            key, number, atoms, quoted, _nil = it.groups()
            items.append(key)
            if number is not None:
                items.append(int(number))
            elif atoms is not None:
                items.append(tuple(_simple_atom(a) for a in atoms.split(b" ") if a))
            elif quoted is not None:
                items.append(quoted)
            else:
                items.append(None)
            pos = it.end()
            if pos < end:
                if body[pos] != 0x20:
                    return None
                pos += 1
                if pos == end:
                    return None
        out += (int(m.group(1)), tuple(items))
    return tuple(out)


def _simple_atom(atom: bytes) -> bytes | int | None:
    """An atom inside a list, as imapclient reads it."""
    if atom == b"NIL":
        return None
    if atom.isdigit() and (atom[:1] != b"0" or len(atom) == 1):
        return int(atom)
    return atom


def upper_keys(resp: dict) -> dict:
    return {k.upper() if isinstance(k, bytes) else k: v for k, v in resp.items()}


def status_entry(entry: Any) -> tuple[str | None, dict]:
    """One untagged STATUS answer -> (the folder's raw name, {ITEM: value}); (None, {})
    when it cannot be read (that folder is then SELECTed as usual)."""
    try:
        parsed = parse_response([entry])
        name, items = parsed[0], parsed[1]
        if isinstance(name, int):
            name = str(name)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        if not isinstance(name, str) or not isinstance(items, tuple) or len(items) % 2:
            return None, {}
        return name, dict(zip(items[::2], items[1::2]))
    except (imapclient_errors.ProtocolError, ValueError, IndexError, TypeError):
        return None, {}


def pairs(parsed: tuple) -> Iterator[tuple[Any, Any]]:
    if len(parsed) % 2:
        raise imapclient_errors.ProtocolError("odd FETCH response")
    for i in range(0, len(parsed), 2):
        yield parsed[i], parsed[i + 1]


def idle_event(response: Any) -> tuple[str, str | None]:
    """One untagged response read during IDLE as (WHAT, folder or None)."""
    if not isinstance(response, tuple) or not response:
        return ("OTHER", None)
    first = response[0]
    if isinstance(first, int) and len(response) > 1 and isinstance(response[1], bytes):
        return (response[1].decode("ascii", "replace").upper(), None)   # 3 EXISTS, 2 FETCH
    what = first.decode("ascii", "replace").upper() if isinstance(first, bytes) else str(first)
    raw: Any = None
    if what == "STATUS" and len(response) > 1:
        raw = response[1]
    elif what == "LIST" and len(response) > 3:
        raw = response[3]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "surrogateescape")
    if isinstance(raw, int):
        raw = str(raw)
    if isinstance(raw, str):
        try:
            raw = decode_mutf7(raw)
        except ValueError:
            pass
        if raw.upper() == "INBOX":
            raw = "INBOX"
    return (what, raw if isinstance(raw, str) else None)


def response_text(data: list) -> str:
    if not data:
        return ""
    item = data[-1] if data else b""
    if isinstance(item, tuple):
        item = item[0]
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return "" if item is None else str(item)


def delimiter_of(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if not isinstance(value, str) or len(value) != 1:
        raise ValueError(f"bad hierarchy delimiter {value!r}")
    return value


def namespace_prefix(value: Any) -> str:
    """A NAMESPACE prefix as a decoded name (raw when it is not modified UTF-7)."""
    if isinstance(value, int):
        value = str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
        raise TypeError("bad namespace prefix")
    try:
        return decode_mutf7(value)
    except ValueError:
        return value


def uids_in(uidset: str) -> list[int]:
    out: list[int] = []
    for lo, hi in set_ranges(uidset):
        if hi == float("inf"):
            raise ValueError("open UID range")
        out.extend(range(lo, int(hi) + 1))
    return out


def copyuid(text: str) -> dict[int, int] | None:
    """The data of a COPYUID code, "validity src-set dst-set" -> {src uid: dst uid}."""
    m = re.fullmatch(r"\s*(\d+) ([\d:,]+) ([\d:,]+)\s*", text)
    if not m:
        return None
    src, dst = _uids_in_ordered(m.group(2)), _uids_in_ordered(m.group(3))
    if len(src) != len(dst):
        return None
    return dict(zip(src, dst))


def _uids_in_ordered(uidset: str) -> list[int]:
    """A COPYUID set in the order given (ranges may run downwards)."""
    out: list[int] = []
    for part in uidset.split(","):
        a, _, b = part.partition(":")
        lo, hi = int(a), int(b or a)
        step = 1 if hi >= lo else -1
        out.extend(range(lo, hi + step, step))
    return out
