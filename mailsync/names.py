"""Folder names: IMAP server names <-> safe local Maildir folder paths.

This module is pure: it only computes strings. It opens no files and does not
import the IMAP library, so every rule here can be tested in isolation.

Pipeline
--------
server name (modified UTF-7 or UTF-8)
    -> ``decode_mutf7`` (only for servers without UTF8=ACCEPT)
    -> ``server_to_components(name, delimiter)``  -> tuple of components
    -> ``local_relpath(parts, layout)``            -> relative POSIX path
and back with ``parts_from_local`` / ``components_to_server`` / ``encode_mutf7``.

Escaping scheme (per component)
-------------------------------
In ``maildir++`` (the default) a component is first written in modified UTF-7,
as Dovecot and Courier keep Maildir++ folder names on disk (``Entwürfe`` ->
``Entw&APw-rfe``, ``R&D`` -> ``R&-D``; control characters are base64 there
too); the ``%XX`` escapes below then apply to the ASCII that results. In
``maildir++-utf8`` and ``fs`` a component is written as UTF-8 text in which only
unsafe characters are replaced by ``%XX``, the upper-case hex of each of their
UTF-8 bytes. Ordinary letters (``ä``, ``日本``) stay as they are. Unsafe are:

* ``%`` (the escape character itself) -> ``%25``
* ``/`` -> ``%2F`` and ``\\`` -> ``%5C``
* control characters (Unicode category Cc: C0, DEL, C1) and the line/paragraph
  separators U+2028/U+2029, e.g. NUL -> ``%00``, U+0085 -> ``%C2%85``
* ``.``: everywhere in both Maildir++ layouts (it is the hierarchy separator there);
  in ``fs`` only as the first character (so no component is ``.``, ``..`` or
  a hidden file).
* in ``fs`` only: a component equal to ``new``, ``cur`` or ``tmp`` (compared
  ASCII case-insensitively, so case-insensitive file systems are safe too)
  gets its first letter escaped (``new`` -> ``%6Eew``) so it never collides
  with a Maildir's own subdirectories.
* the empty component (from ``a//b``) is written as the lone ``%``, which is
  not a valid escape and so cannot be confused with any other name.

Long names: every path component is kept <= 255 bytes. An encoded name that
is longer is split (greedily, never inside a character or a ``%XX`` escape)
into several path components; every continuation starts with ``%+``, which no
encoded name can start with. E.g. a 600-byte ``fs`` component becomes
``<255 bytes>/%+<253 bytes>/%+<rest>``; in ``maildir++`` the whole ``.A.B``
name is split in the same way. The scheme therefore stays fully reversible
and needs no state database. (The whole path may still exceed PATH_MAX for
absurdly long server names; the file system then reports the error.)

Layouts
-------
``maildir++`` (Dovecot/Courier): INBOX is the account root itself (relpath
``""``); folder ``A/B`` is ``.A.B`` at the root, names in modified UTF-7.
``maildir++-utf8``: the same with UTF-8 names (``.Entwürfe``; Dovecot reads them
with ``:UTF-8`` in ``mail_location``; mailsync wrote them in ``maildir++`` before).
``fs``: INBOX is the directory ``INBOX``; ``A/B`` is ``A/B``, names in UTF-8.

``other_spelling`` gives a folder's path in the other Maildir++ naming, so that a
folder written or recorded under it is kept there (an upgrade never doubles it).

INBOX is case-insensitive (RFC 3501): a one-component name equal to ``INBOX``
in any ASCII case *is* INBOX. Only that exact top-level name is folded; the
children ``inbox/x`` and ``INBOX/x`` stay distinct, as do all other names that
differ only in case (no case folding; on a case-insensitive file system such
pairs would share a directory - the caller should detect that).

``parts_from_local`` is strict: it accepts exactly the paths that
``local_relpath`` produces (it re-encodes and compares) and raises
``ValueError`` for anything else, e.g. a directory made by hand. So a stray
entry in the account root is never mistaken for a folder. Note that in
``maildir++`` every root entry starting with ``.`` (other than ``.``/``..``)
can be a folder, and in ``fs`` every root entry not starting with ``.`` can.

Unicode normalization is not applied: ``ä`` (NFC) and ``a`` + U+0308 (NFD)
are different names, as they are on the server.

Other tools' names
------------------
``peer_relpaths`` gives the paths mbsync (isync 1.4) and offlineimap would
have used for a server folder in their default naming, which keeps the
server's modified UTF-7 spelling on disk (``.Entw&APw-rfe``), so that a
Maildir they filled maps to the server folders it came from.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

__all__ = [
    "LAYOUTS",
    "MAX_COMPONENT_BYTES",
    "canonical_parts",
    "components_to_server",
    "decode_mutf7",
    "encode_mutf7",
    "is_safe_relpath",
    "local_relpath",
    "matches",
    "parts_from_local",
    "other_spelling",
    "peer_relpaths",
    "server_to_components",
]

LAYOUTS = ("maildir++", "maildir++-utf8", "fs")
MAILDIRPP = frozenset({"maildir++", "maildir++-utf8"})   # .A.B at the root
MAX_COMPONENT_BYTES = 255
INBOX = "INBOX"

_EMPTY = "%"          # encoding of the empty component
_CONT = "%+"          # prefix of a continuation path component
_RESERVED = frozenset({"new", "cur", "tmp"})
_ALWAYS_UNSAFE = frozenset("%/\\")
_UNSAFE_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
_HEX = frozenset("0123456789ABCDEF")


# --------------------------------------------------------------------------
# RFC 3501 section 5.1.3: modified UTF-7
# --------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"
_B64_INDEX = {c: i for i, c in enumerate(_B64)}


def _b64_encode(data: bytes) -> str:
    out = []
    bits = nbits = 0
    for byte in data:
        bits = (bits << 8) | byte
        nbits += 8
        while nbits >= 6:
            nbits -= 6
            out.append(_B64[(bits >> nbits) & 0x3F])
        bits &= (1 << nbits) - 1
    if nbits:
        out.append(_B64[(bits << (6 - nbits)) & 0x3F])
    return "".join(out)


def _b64_decode(text: str, name: str) -> bytes:
    out = bytearray()
    bits = nbits = 0
    for ch in text:
        value = _B64_INDEX.get(ch)
        if value is None:
            raise ValueError(f"invalid modified UTF-7 in folder name {name!r}: "
                             f"{ch!r} is not a modified base64 character")
        bits = (bits << 6) | value
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)
            bits &= (1 << nbits) - 1
    if nbits >= 6 or bits or len(out) % 2:
        raise ValueError(f"invalid modified UTF-7 in folder name {name!r}: "
                         f"base64 section &{text}- is not whole UTF-16")
    return bytes(out)


def encode_mutf7(name: str) -> str:
    """Encode a folder name as RFC 3501 modified UTF-7.

    Printable ASCII (0x20-0x7E) stands for itself, ``&`` becomes ``&-`` and
    every run of other characters becomes ``&`` + base64 (with ``,`` for
    ``/``, no padding) of its UTF-16BE + ``-``. Raises ``ValueError`` for a
    string that is not valid Unicode (lone surrogates).
    """
    if not isinstance(name, str):
        raise TypeError(f"folder name must be str, not {type(name).__name__}")
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            try:
                data = "".join(run).encode("utf-16-be")
            except UnicodeEncodeError:
                raise ValueError(f"folder name {name!r} is not valid Unicode "
                                 "(lone surrogate)") from None
            out.append("&" + _b64_encode(data) + "-")
            run.clear()

    for ch in name:
        if "\x20" <= ch <= "\x7e":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(name: bytes | str) -> str:
    """Decode an RFC 3501 modified UTF-7 folder name to text.

    Strict: anything that is not the one canonical encoding of some name
    (raw 8-bit or control characters, bad base64, odd or non-zero padding,
    an unterminated ``&`` section, lone surrogates, ASCII or adjacent
    sections encoded in base64) raises ``ValueError``. Strictness keeps the
    mapping injective: two different server names never decode to the same
    text, so they never share a local folder.
    """
    if isinstance(name, (bytes, bytearray, memoryview)):
        try:
            text = bytes(name).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"invalid modified UTF-7 folder name {bytes(name)!r}: "
                             "it has 8-bit bytes") from None
    elif isinstance(name, str):
        text = name
    else:
        raise TypeError(f"folder name must be bytes or str, not {type(name).__name__}")

    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "&":
            end = text.find("-", i + 1)
            if end < 0:
                raise ValueError(f"invalid modified UTF-7 folder name {text!r}: "
                                 "'&' section is not closed by '-'")
            section = text[i + 1:end]
            if section == "":
                out.append("&")
            else:
                data = _b64_decode(section, text)
                try:
                    out.append(data.decode("utf-16-be"))
                except UnicodeDecodeError:
                    raise ValueError(f"invalid modified UTF-7 folder name {text!r}: "
                                     "broken UTF-16 surrogate pair") from None
            i = end + 1
        elif "\x20" <= ch <= "\x7e":
            out.append(ch)
            i += 1
        else:
            raise ValueError(f"invalid modified UTF-7 folder name {text!r}: "
                             f"character {ch!r} must be base64-encoded")
    decoded = "".join(out)
    if encode_mutf7(decoded) != text:
        raise ValueError(f"invalid modified UTF-7 folder name {text!r}: not the "
                         f"canonical encoding of {decoded!r} "
                         f"(that is {encode_mutf7(decoded)!r})")
    return decoded


# --------------------------------------------------------------------------
# Server names <-> components
# --------------------------------------------------------------------------

def _check_delimiter(delimiter: str | None) -> None:
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise ValueError(f"hierarchy delimiter must be one character or None, "
                         f"not {delimiter!r}")


def server_to_components(name: str, delimiter: str | None) -> tuple[str, ...]:
    """Split a (decoded) server folder name by the server's hierarchy delimiter.

    ``delimiter`` is the one character from the LIST response, or ``None``
    for a flat server (then the whole name is one component, whatever it
    contains). Empty components are kept (``a//b`` -> ``("a", "", "b")``)
    so that the mapping stays reversible. Names are returned as given; INBOX
    is folded only by ``canonical_parts``/``local_relpath``.
    """
    if not isinstance(name, str):
        raise TypeError(f"folder name must be str, not {type(name).__name__}")
    if name == "":
        raise ValueError("empty folder name")
    _check_delimiter(delimiter)
    if delimiter is None:
        return (name,)
    return tuple(name.split(delimiter))


def components_to_server(parts: Sequence[str], delimiter: str | None) -> str:
    """Join components with the server's delimiter: the inverse of
    ``server_to_components``.

    A component that contains the delimiter cannot exist on such a server
    (the server would read it as two levels), so it raises ``ValueError``,
    as does more than one component on a flat (``None``) server.
    """
    parts = _as_parts(parts)
    _check_delimiter(delimiter)
    if delimiter is None:
        if len(parts) != 1:
            raise ValueError(f"server has no hierarchy delimiter; cannot name "
                             f"nested folder {parts!r}")
        return parts[0]
    for part in parts:
        if delimiter in part:
            raise ValueError(f"folder component {part!r} contains the server's "
                             f"hierarchy delimiter {delimiter!r}")
    return delimiter.join(parts)


def _is_inbox(part: str) -> bool:
    # ASCII-only comparison: "ınbox".upper() == "INBOX" in Python, and such a
    # name is *not* INBOX.
    return part.isascii() and part.upper() == INBOX


def _as_parts(parts: Iterable[str]) -> tuple[str, ...]:
    if isinstance(parts, (str, bytes)):
        raise TypeError("parts must be a sequence of components, not a single string")
    parts = tuple(parts)
    if not parts:
        raise ValueError("folder has no name components")
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"folder component must be str, not {type(part).__name__}")
    return parts


def canonical_parts(parts: Iterable[str]) -> tuple[str, ...]:
    """The components with a top-level INBOX (any ASCII case) spelled ``INBOX``."""
    parts = _as_parts(parts)
    if len(parts) == 1 and _is_inbox(parts[0]):
        return (INBOX,)
    return parts


# --------------------------------------------------------------------------
# Components <-> local relative paths
# --------------------------------------------------------------------------

def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")


def _escape(ch: str) -> str:
    return "".join(f"%{b:02X}" for b in ch.encode("utf-8"))


def _encode_component(part: str, layout: str) -> str:
    if part == "":
        return _EMPTY
    if layout == "maildir++":
        return _encode_mutf7_component(part)
    out = []
    for i, ch in enumerate(part):
        if "\ud800" <= ch <= "\udfff":
            raise ValueError(f"folder name component {part!r} is not valid Unicode "
                             "(lone surrogate)")
        if (ch in _ALWAYS_UNSAFE
                or unicodedata.category(ch) in _UNSAFE_CATEGORIES
                or (ch == "." and (layout in MAILDIRPP or i == 0))):
            out.append(_escape(ch))
        else:
            out.append(ch)
    encoded = "".join(out)
    if layout == "fs" and encoded.lower() in _RESERVED:
        encoded = _escape(encoded[0]) + encoded[1:]
    return encoded


def _encode_mutf7_component(part: str) -> str:
    """Modified UTF-7 (Dovecot's and Courier's Maildir++ spelling), then %XX for the
    ASCII that cannot stand in a Maildir++ name: the escape itself, the separator
    '.', and the path separators."""
    return "".join(_escape(ch) if ch in _ALWAYS_UNSAFE or ch == "." else ch
                   for ch in encode_mutf7(part))


def _decode_component(encoded: str, layout: str) -> str:
    """Undo the %XX escapes, and modified UTF-7 in ``maildir++`` (no canonical check;
    the caller re-encodes)."""
    if encoded == _EMPTY:
        return ""
    if layout == "maildir++":
        if not encoded.isascii():
            raise ValueError(f"local folder name {encoded!r} is not modified UTF-7")
        return decode_mutf7(_decode_component(encoded, "fs"))
    data = bytearray()
    i, n = 0, len(encoded)
    while i < n:
        ch = encoded[i]
        if ch == "%":
            hexpair = encoded[i + 1:i + 3]
            if len(hexpair) != 2 or not set(hexpair) <= _HEX:
                raise ValueError(f"bad escape {encoded[i:i + 3]!r} in local folder "
                                 f"name {encoded!r}")
            data.append(int(hexpair, 16))
            i += 3
        else:
            data += ch.encode("utf-8", "surrogatepass")
            i += 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"local folder name {encoded!r} is not valid UTF-8 "
                         "once unescaped") from None


def _split_long(encoded: str) -> list[str]:
    """Split an encoded name into path components of <= 255 bytes each."""
    if len(encoded.encode("utf-8")) <= MAX_COMPONENT_BYTES:
        return [encoded]
    chunks: list[str] = []
    cur: list[str] = []
    size = 0
    i, n = 0, len(encoded)
    while i < n:
        tok = encoded[i:i + 3] if encoded[i] == "%" else encoded[i]
        i += len(tok)
        tsize = len(tok.encode("utf-8"))
        if size + tsize > MAX_COMPONENT_BYTES:
            chunks.append("".join(cur))
            cur, size = [_CONT], len(_CONT)
        cur.append(tok)
        size += tsize
    chunks.append("".join(cur))
    return chunks


def _join_long(components: list[str], relpath: str) -> list[str]:
    merged: list[str] = []
    for comp in components:
        if comp.startswith(_CONT):
            if not merged:
                raise ValueError(f"local folder path {relpath!r} starts with a "
                                 "continuation component")
            merged[-1] += comp[len(_CONT):]
        else:
            merged.append(comp)
    return merged


def local_relpath(parts: Sequence[str], layout: str) -> str:
    """The folder's path relative to the account's maildir root.

    A relative POSIX path that never starts with ``/``, never has an empty,
    ``.`` or ``..`` component and whose components are <= 255 bytes. It is
    empty only for INBOX in ``maildir++`` (INBOX is the root itself).
    Injective: different (canonical) parts always give different paths.
    Raises ``ValueError`` for an unknown layout or no components.
    """
    _check_layout(layout)
    parts = canonical_parts(parts)
    if layout in MAILDIRPP:
        if parts == (INBOX,):
            return ""
        name = "." + ".".join(_encode_component(p, layout) for p in parts)
        return "/".join(_split_long(name))
    return "/".join(chunk for p in parts
                    for chunk in _split_long(_encode_component(p, layout)))


def parts_from_local(relpath: str, layout: str) -> tuple[str, ...]:
    """Exact inverse of ``local_relpath``.

    Accepts only paths that ``local_relpath`` can produce (it re-encodes the
    result and compares); anything else raises ``ValueError``. A top-level
    INBOX comes back spelled ``INBOX``.
    """
    _check_layout(layout)
    if not isinstance(relpath, str):
        raise TypeError(f"relpath must be str, not {type(relpath).__name__}")
    if layout in MAILDIRPP and relpath == "":
        return (INBOX,)
    merged = _join_long(relpath.split("/"), relpath)
    if layout in MAILDIRPP:
        if len(merged) != 1 or not merged[0].startswith(".") or len(merged[0]) < 2:
            raise ValueError(f"{relpath!r} is not a maildir++ folder name")
        parts = tuple(_decode_component(c, layout) for c in merged[0][1:].split("."))
    else:
        parts = tuple(_decode_component(c, layout) for c in merged)
    if local_relpath(parts, layout) != relpath:
        raise ValueError(f"{relpath!r} is not a folder path written by mailsync "
                         f"({layout} layout); it would be "
                         f"{local_relpath(parts, layout)!r}")
    return canonical_parts(parts)


def is_safe_relpath(relpath: str) -> bool:
    """Last line of defence before any file system write.

    True for ``""`` (the account root itself) and for a relative path whose
    every ``/``-separated component is non-empty, not ``.`` or ``..``, at
    most 255 bytes of valid UTF-8, and free of NUL, backslash and control
    characters. Independent of the encoder above.
    """
    if not isinstance(relpath, str):
        return False
    if relpath == "":
        return True
    if relpath.startswith("/") or "\\" in relpath:
        return False
    if any(unicodedata.category(ch) == "Cc" for ch in relpath):  # includes NUL
        return False
    for comp in relpath.split("/"):
        if comp in ("", ".", ".."):
            return False
        try:
            size = len(comp.encode("utf-8"))
        except UnicodeEncodeError:
            return False
        if size > MAX_COMPONENT_BYTES:
            return False
    return True


# --------------------------------------------------------------------------
# Other tools' names for the same folder
# --------------------------------------------------------------------------

def peer_relpaths(parts: Sequence[str], layout: str) -> tuple[str, ...]:
    """The relpaths mbsync and offlineimap would have given this server folder.

    In order of preference, only those that differ from ``local_relpath`` and
    from each other, and only safe ones (``is_safe_relpath``, no component
    named ``cur``/``new``/``tmp``: the peers do not escape anything, mailsync
    must never take a path outside the root or inside a Maildir's own
    subdirectories). Components are modified UTF-7, as the peers keep them:

    * ``maildir++``: mbsync ``SubFolders Maildir++``: ``.Entw&APw-rfe``,
      ``.A.B``; a child of INBOX is ``..Sub`` (isync 1.4.4 writes it so); none
      for a component holding ``.`` (mbsync refuses those).
    * ``fs`` (INBOX at ``INBOX``, as mailsync's own): mbsync ``SubFolders
      Verbatim`` ``A/B``, mbsync ``SubFolders Legacy`` ``A/.B/.C``, then
      offlineimap's default ``A.B`` (every folder directly under the root).

    Returns ``()`` for names the peers cannot have written (an empty
    component, a lone surrogate).
    """
    _check_layout(layout)
    parts = canonical_parts(parts)
    try:
        own = local_relpath(parts, layout)
        encoded = tuple(encode_mutf7(p) for p in parts)
    except ValueError:
        return ()
    if "" in encoded:
        return ()
    if layout in MAILDIRPP:
        candidates = [_mbsync_maildirpp(encoded)]
    else:
        candidates = [_mbsync_verbatim(encoded), _mbsync_legacy(encoded),
                      _offlineimap(encoded)]
    out: list[str] = []
    for relpath in candidates:
        if (relpath is not None and relpath != own and relpath not in out
                and _is_safe_peer_path(relpath)):
            out.append(relpath)
    return tuple(out)


def other_spelling(parts: Sequence[str], layout: str) -> str | None:
    """The folder's path in the other Maildir++ naming (UTF-8 for ``maildir++``,
    modified UTF-7 for ``maildir++-utf8``) where it differs; None otherwise and in
    ``fs``. A folder recorded or found under it keeps it: mailsync wrote UTF-8 names in
    ``maildir++`` before modified UTF-7 became its default there."""
    _check_layout(layout)
    if layout not in MAILDIRPP:
        return None
    other = "maildir++-utf8" if layout == "maildir++" else "maildir++"
    try:
        own, theirs = local_relpath(parts, layout), local_relpath(parts, other)
    except ValueError:
        return None
    return theirs if theirs != own else None


def _mbsync_maildirpp(encoded: tuple[str, ...]) -> str | None:
    if encoded == (INBOX,) or any("." in p for p in encoded):
        return None
    if encoded[0] == INBOX:
        # mbsync joins INBOX's children to the Inbox path as "/." + "/Sub"
        return "." + "".join("." + p for p in encoded[1:])
    return "." + ".".join(encoded)


def _mbsync_verbatim(encoded: tuple[str, ...]) -> str:
    return "/".join(encoded)


def _mbsync_legacy(encoded: tuple[str, ...]) -> str:
    return encoded[0] + "".join("/." + p for p in encoded[1:])


def _offlineimap(encoded: tuple[str, ...]) -> str:
    return ".".join(encoded)


def _is_safe_peer_path(relpath: str) -> bool:
    return (relpath != "" and is_safe_relpath(relpath)
            and not any(c.lower() in _RESERVED for c in relpath.split("/")))


# --------------------------------------------------------------------------
# folders = [...] / exclude = [...]
# --------------------------------------------------------------------------

def _fold_inbox(name: str) -> str:
    head, sep, rest = name.partition("/")
    return INBOX + sep + rest if _is_inbox(head) else name


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    # fnmatch's translation ('*' also matches '/', with its guard against
    # catastrophic backtracking), but with '[' made literal: "[[]" is a
    # one-character class holding '['; a lone ']' is already literal.
    return re.compile(fnmatch.translate(pattern.replace("[", "[[]")))


def _match_one(name: str, pattern: str) -> bool:
    pattern = _fold_inbox(pattern)
    return name == pattern or _glob_regex(pattern).fullmatch(name) is not None


def matches(name: str, patterns: Iterable[str], excludes: Iterable[str] = ()) -> bool:
    """Whether a server folder is selected by ``folders``/``exclude`` config.

    ``name`` is the decoded server name with its components joined by ``/``
    (whatever the server's own delimiter). Glob rules: ``*`` matches any run
    of characters *including* ``/`` (so ``Archive*`` also selects
    ``Archive/2023``), ``?`` matches one character, everything else is
    literal - including ``[`` and ``]``, unlike fnmatch, because folders such
    as ``[Gmail]/Spam`` are common. Matching is case-sensitive, except that a
    first component equal to INBOX in any ASCII case is INBOX in both name and
    pattern. A folder is selected if it matches some pattern and no exclude
    pattern: exclude wins.
    """
    if isinstance(patterns, str):
        patterns = (patterns,)
    if isinstance(excludes, str):
        excludes = (excludes,)
    name = _fold_inbox(name)
    if not any(_match_one(name, p) for p in patterns):
        return False
    return not any(_match_one(name, p) for p in excludes)
