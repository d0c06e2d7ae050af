"""Tests for mailsync.names: folder name encoding, both layouts, mUTF-7, globs."""

from __future__ import annotations

import os
import posixpath

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from mailsync.names import (
    MAX_COMPONENT_BYTES,
    canonical_parts,
    components_to_server,
    decode_mutf7,
    encode_mutf7,
    is_safe_relpath,
    local_relpath,
    matches,
    parts_from_local,
    other_spelling,
    peer_relpaths,
    server_to_components,
)

LAYOUTS = ("maildir++", "maildir++-utf8", "fs")
LONG = "x" * 300
LONG_DOTS = "a" + "." * 400 + "new"
LONG_UNI = "日本" * 100            # 600 bytes of UTF-8
LONG_ESC = "%" * 120              # 360 bytes once escaped

# (server name as components, maildir++-utf8 relpath, fs relpath); maildir++ is the
# same as maildir++-utf8 except for the names in MUTF7 below
TABLE = [
    (("INBOX",), "", "INBOX"),
    (("Sent",), ".Sent", "Sent"),
    (("A", "B"), ".A.B", "A/B"),
    (("INBOX", "Sub"), ".INBOX.Sub", "INBOX/Sub"),
    (("Entwürfe",), ".Entwürfe", "Entwürfe"),
    (("日本語", "メール"), ".日本語.メール", "日本語/メール"),
    (("../../evil",), ".%2E%2E%2F%2E%2E%2Fevil", "%2E.%2F..%2Fevil"),
    (("a", "..", "..", "b"), ".a.%2E%2E.%2E%2E.b", "a/%2E./%2E./b"),
    (("a/../../b",), ".a%2F%2E%2E%2F%2E%2E%2Fb", "a%2F..%2F..%2Fb"),
    ((".hidden",), ".%2Ehidden", "%2Ehidden"),
    (("...",), ".%2E%2E%2E", "%2E.."),
    ((".",), ".%2E", "%2E"),
    (("..",), ".%2E%2E", "%2E."),
    (("foo.bar",), ".foo%2Ebar", "foo.bar"),
    (("foo", "bar"), ".foo.bar", "foo/bar"),
    (("back\\slash",), ".back%5Cslash", "back%5Cslash"),
    (("nul\x00byte",), ".nul%00byte", "nul%00byte"),
    (("tab\tnl\n\x7f",), ".tab%09nl%0A%7F", "tab%09nl%0A%7F"),
    (("c1\x85",), ".c1%C2%85", "c1%C2%85"),
    (("ls\u2028",), ".ls%E2%80%A8", "ls%E2%80%A8"),
    (("a", "", "b"), ".a.%.b", "a/%/b"),
    (("", "a"), ".%.a", "%/a"),
    (("a", ""), ".a.%", "a/%"),
    (("",), ".%", "%"),
    (("100%",), ".100%25", "100%25"),
    (("%2E",), ".%252E", "%252E"),
    (("%",), ".%25", "%25"),
    (("new",), ".new", "%6Eew"),
    (("INBOX", "cur"), ".INBOX.cur", "INBOX/%63ur"),
    (("A", "tmp", "x"), ".A.tmp.x", "A/%74mp/x"),
    (("NEW",), ".NEW", "%4EEW"),
    (("news",), ".news", "news"),
    (("Junk",), ".Junk", "Junk"),
    (("junk",), ".junk", "junk"),
    (("[Gmail]", "All Mail"), ".[Gmail].All Mail", "[Gmail]/All Mail"),
    (("inbox", "x"), ".inbox.x", "inbox/x"),
    (("ınbox",), ".ınbox", "ınbox"),  # dotless i: not INBOX
]


# maildir++ (the default): modified UTF-7 on disk, as Dovecot and Courier keep it
MUTF7 = {
    ("Entwürfe",): ".Entw&APw-rfe",
    ("日本語", "メール"): ".&ZeVnLIqe-.&MOEw,DDr-",
    ("nul\x00byte",): ".nul&AAA-byte",
    ("tab\tnl\n\x7f",): ".tab&AAk-nl&AAoAfw-",
    ("c1\x85",): ".c1&AIU-",
    ("ls\u2028",): ".ls&ICg-",
    ("ınbox",): ".&ATE-nbox",
}


@pytest.mark.parametrize("parts,mdpp,fs", TABLE)
def test_table(parts, mdpp, fs):
    for layout, want in (("maildir++", MUTF7.get(parts, mdpp)), ("maildir++-utf8", mdpp),
                         ("fs", fs)):
        got = local_relpath(parts, layout)
        assert got == want, layout
        assert is_safe_relpath(got)
        assert parts_from_local(got, layout) == canonical_parts(parts)


def test_maildirpp_names_are_modified_utf7_on_disk_and_utf8_a_choice():
    assert local_relpath(("R&D",), "maildir++") == ".R&-D"          # as Dovecot writes it
    assert local_relpath(("R&D",), "maildir++-utf8") == ".R&D"
    assert other_spelling(("Entwürfe",), "maildir++") == ".Entwürfe"
    assert other_spelling(("Entwürfe",), "maildir++-utf8") == ".Entw&APw-rfe"
    assert other_spelling(("Sent",), "maildir++") is None
    assert other_spelling(("Entwürfe",), "fs") is None
    for not_mutf7 in (".Entwürfe", ".R&D", ".Entw&APw"):
        with pytest.raises(ValueError):
            parts_from_local(not_mutf7, "maildir++")


@pytest.mark.parametrize("inbox", ["INBOX", "inbox", "Inbox", "iNbOx"])
def test_inbox_is_case_insensitive(inbox):
    assert local_relpath((inbox,), "maildir++") == ""
    assert local_relpath((inbox,), "fs") == "INBOX"
    assert parts_from_local("", "maildir++") == ("INBOX",)
    assert parts_from_local("INBOX", "fs") == ("INBOX",)
    assert matches(inbox, ["INBOX"], [])
    assert matches("INBOX", [inbox], [])
    assert not matches(inbox, ["*"], [inbox.lower()])


def test_case_only_differences_stay_distinct():
    names = [("Foo",), ("foo",), ("FOO",), ("INBOX", "a"), ("inbox", "a")]
    for layout in LAYOUTS:
        paths = {local_relpath(p, layout) for p in names}
        assert len(paths) == len(names)


@pytest.mark.parametrize("part", [LONG, LONG_DOTS, LONG_UNI, LONG_ESC, "a.b" * 200])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_long_components_are_split_reversibly(part, layout):
    for parts in [(part,), ("A", part), (part, "new"), (part, part[:50])]:
        rel = local_relpath(parts, layout)
        assert is_safe_relpath(rel)
        comps = rel.split("/")
        assert len(comps) > 1
        assert all(len(c.encode()) <= MAX_COMPONENT_BYTES for c in comps)
        assert all(c not in ("new", "cur", "tmp") for c in comps)
        assert parts_from_local(rel, layout) == parts


def test_long_split_is_greedy_and_marked():
    rel = local_relpath(("x" * 600,), "fs")
    assert rel.split("/") == ["x" * 255, "%+" + "x" * 253, "%+" + "x" * 92]
    rel = local_relpath(("x" * 600,), "maildir++")
    assert rel.split("/") == ["." + "x" * 254, "%+" + "x" * 253, "%+" + "x" * 93]


def test_long_name_and_its_prefix_are_distinct():
    # the first chunk of a long name is itself a valid folder name
    long = local_relpath(("x" * 300,), "fs")
    short = local_relpath(("x" * 255,), "fs")
    assert long.startswith(short + "/") and long != short
    assert parts_from_local(short, "fs") == ("x" * 255,)


def test_unknown_layout():
    with pytest.raises(ValueError, match="unknown layout"):
        local_relpath(("A",), "mbox")
    with pytest.raises(ValueError, match="unknown layout"):
        parts_from_local("A", "Maildir++")


def test_bad_parts():
    with pytest.raises(ValueError):
        local_relpath((), "fs")
    with pytest.raises(TypeError):
        local_relpath("INBOX", "fs")
    with pytest.raises(ValueError, match="surrogate"):
        local_relpath(("a\udc80",), "fs")


@pytest.mark.parametrize("layout,rel", [
    ("maildir++", "."), ("maildir++", ".."), ("maildir++", "Sent"),
    ("maildir++", ".INBOX"), ("maildir++", ".inbox"), ("maildir++", ".a."),
    ("maildir++", "..a"), ("maildir++", ".a/b"), ("maildir++", ".a%2e"),
    ("maildir++", ".a%zz"), ("maildir++", ".a%"), ("maildir++", ".caf%C3"),
    ("maildir++", ".%+x"), ("maildir++", "%+x"), ("maildir++", "/.a"),
    ("maildir++", ".foo%2Fbar/%+"), ("maildir++", ".x/%+y"),
    ("fs", ""), ("fs", "."), ("fs", ".."), ("fs", "a/../b"), ("fs", ".hidden"),
    ("fs", "new"), ("fs", "INBOX/cur"), ("fs", "inbox"), ("fs", "a//b"),
    ("fs", "/etc"), ("fs", "a/"), ("fs", "%41"), ("fs", "%+a"), ("fs", "a/%+"),
    ("fs", "a%2fb"), ("fs", "a\udcff"), ("fs", "a\x00b"), ("fs", "a\\b"),
])
def test_parts_from_local_rejects_foreign_paths(layout, rel):
    with pytest.raises(ValueError):
        parts_from_local(rel, layout)


@pytest.mark.parametrize("rel,ok", [
    ("", True), ("a", True), (".a.b", True), ("a/b/c", True), ("日本/ä", True),
    ("/a", False), ("a/", False), ("a//b", False), (".", False), ("..", False),
    ("a/../b", False), ("a/./b", False), ("../a", False), ("a\x00b", False),
    ("a\\b", False), ("a\nb", False), ("x" * 255, True), ("x" * 256, False),
    ("é" * 128, False), ("a\udc80", False), (None, False), (b"a", False),
])
def test_is_safe_relpath(rel, ok):
    assert is_safe_relpath(rel) is ok


# ---------------------------------------------------------------- server names

@pytest.mark.parametrize("name,delim,parts", [
    ("INBOX", "/", ("INBOX",)),
    ("A/B", "/", ("A", "B")),
    ("A.B", ".", ("A", "B")),
    ("foo.bar", "/", ("foo.bar",)),
    ("a//b", "/", ("a", "", "b")),
    ("/a", "/", ("", "a")),
    ("a/", "/", ("a", "")),
    ("a/b.c", None, ("a/b.c",)),
    ("../../evil", "/", ("..", "..", "evil")),
])
def test_server_components(name, delim, parts):
    assert server_to_components(name, delim) == parts
    assert components_to_server(parts, delim) == name


def test_server_components_errors():
    with pytest.raises(ValueError, match="delimiter"):
        components_to_server(("a/b",), "/")
    with pytest.raises(ValueError, match="delimiter"):
        components_to_server(("a", "b"), None)
    with pytest.raises(ValueError):
        server_to_components("", "/")
    with pytest.raises(ValueError):
        server_to_components("a", "//")
    with pytest.raises(ValueError):
        server_to_components("a", "")


# ---------------------------------------------------------------- mUTF-7

@pytest.mark.parametrize("encoded,decoded", [
    ("INBOX", "INBOX"),
    ("&ZeVnLIqe-", "日本語"),
    ("Entw&APw-rfe", "Entwürfe"),
    ("&-", "&"),
    ("A&-B", "A&B"),
    ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
    ("&AOQA9gD8-", "äöü"),
    ("&2D3eAA-", "\U0001f600"),
    ("&AAA-", "\x00"),
    ("[Gmail]/Gesendet", "[Gmail]/Gesendet"),
    ("", ""),
])
def test_mutf7_vectors(encoded, decoded):
    assert decode_mutf7(encoded) == decoded
    assert decode_mutf7(encoded.encode("ascii")) == decoded
    assert encode_mutf7(decoded) == encoded


@pytest.mark.parametrize("bad", [
    "&", "&ZeVn", "a&b", "&ZeV-", "&Ze-", "&ZeVnLIq-",       # unterminated / truncated
    "&APx-",                                                # non-zero padding bits
    "&ZeVnLIqeAA-",                                         # non-minimal length
    "&2D0-", "&3gA-", "&2D3YPQ-",                           # lone / broken surrogates
    "&AGE-",                                                # ASCII 'a' encoded
    "&AOQ-&APY-",                                           # adjacent sections
    "&ZeVn/Iqe-", "&Ze=-",                                  # not modified base64
    "tab\there", "nul\x00", "é", "日本",                    # must be encoded
    b"\xc3\xa4", b"&\xff-",
])
def test_mutf7_invalid(bad):
    with pytest.raises(ValueError):
        decode_mutf7(bad)


def test_mutf7_rejects_surrogates_on_encode():
    with pytest.raises(ValueError):
        encode_mutf7("a\ud800b")


@given(st.text())
def test_mutf7_roundtrip(text):
    enc = encode_mutf7(text)
    assert enc.isascii() and all("\x20" <= c <= "\x7e" for c in enc)
    assert decode_mutf7(enc) == text
    assert decode_mutf7(enc.encode("ascii")) == text


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127)))
def test_mutf7_decode_never_crashes(text):
    try:
        out = decode_mutf7(text)
    except ValueError:
        return
    assert encode_mutf7(out) == text   # only canonical input is accepted


@given(st.binary())
def test_mutf7_decode_bytes_never_crashes(data):
    try:
        decode_mutf7(data)
    except ValueError:
        pass


# ---------------------------------------------------------------- matching

@pytest.mark.parametrize("name,folders,exclude,want", [
    ("INBOX", ["*"], [], True),
    ("Junk", ["*"], ["Junk"], False),
    ("junk", ["*"], ["Junk"], True),        # case-sensitive apart from INBOX
    ("Archive/2023", ["Archive*"], [], True),   # '*' crosses '/'
    ("Archive/2023/Q1", ["Archive/*"], [], True),
    ("Archive", ["Archive/*"], [], False),
    ("Sent", ["INBOX", "Sent"], [], True),
    ("Drafts", ["INBOX", "Sent"], [], False),
    ("A/Junk", ["*"], ["*Junk"], False),
    ("A/Junk", ["*"], ["Junk"], True),
    ("[Gmail]/Spam", ["*"], ["[Gmail]/Spam"], False),   # brackets are literal
    ("[Gmail]/All Mail", ["[Gmail]/*"], [], True),
    ("G/All Mail", ["[Gmail]/*"], [], False),
    ("a.b", ["a?b"], [], True),
    ("ab", ["a?b"], [], False),
    ("inbox/Sub", ["INBOX/*"], [], True),
    ("INBOX/Sub", ["*"], ["inbox/sub"], True),
    ("INBOX/Sub", ["*"], ["inbox/Sub"], False),
    ("x", [], [], False),
    ("x", "*", (), True),                   # a lone string is one pattern
    ("a\nb", ["a*"], [], True),
])
def test_matches(name, folders, exclude, want):
    assert matches(name, folders, exclude) is want


# ---------------------------------------------------------------- properties

nasty_chars = st.sampled_from(list("./\\%\x00\x01\n\x7f\x85\u2028 +-&:~") + ["ä", "日", "\U0001f600"])
component = st.one_of(
    st.text(),
    st.text(alphabet=nasty_chars),
    st.sampled_from(["", ".", "..", "new", "cur", "tmp", "NEW", "INBOX", "inbox",
                     "%", "%2E", "%+", "foo.bar", ".hidden", "../../evil"]),
    st.text(alphabet=nasty_chars | st.characters(exclude_categories=("Cs",)),
            min_size=80, max_size=400),
)
parts_st = st.lists(component, min_size=1, max_size=6).map(tuple)


@settings(max_examples=250)
@given(parts_st, st.sampled_from(LAYOUTS))
@example(("x" * 1000,), "maildir++")
@example(("." * 300,), "fs")
@example(("a" * 254 + "ä",), "fs")
@example(("a" * 253 + "%",), "fs")
def test_roundtrip_and_safety(parts, layout):
    rel = local_relpath(parts, layout)
    assert is_safe_relpath(rel)
    assert not rel.startswith("/")
    if rel == "":
        assert layout.startswith("maildir++") and canonical_parts(parts) == ("INBOX",)
    for comp in rel.split("/") if rel else []:
        assert comp not in ("", ".", "..")
        assert len(comp.encode("utf-8")) <= MAX_COMPONENT_BYTES
        assert "\x00" not in comp and "\\" not in comp
        if layout == "fs":
            assert not comp.startswith(".")
            assert comp.lower() not in ("new", "cur", "tmp")
    assert parts_from_local(rel, layout) == canonical_parts(parts)


@settings(max_examples=200)
@given(parts_st, parts_st, st.sampled_from(LAYOUTS))
def test_injective(a, b, layout):
    assume(canonical_parts(a) != canonical_parts(b))
    assert local_relpath(a, layout) != local_relpath(b, layout)


@given(st.lists(st.text(alphabet="aAbB", min_size=1, max_size=4), min_size=1, max_size=3),
       st.sampled_from(LAYOUTS))
def test_case_variants_injective(parts, layout):
    upper = tuple(p.upper() for p in parts)
    lower = tuple(p.lower() for p in parts)
    assume(upper != lower)
    assert local_relpath(upper, layout) != local_relpath(lower, layout)


@settings(max_examples=200)
@given(parts_st, st.sampled_from(LAYOUTS))
def test_never_leaves_root(parts, layout):
    root = os.path.normpath("/srv/mail/account")
    rel = local_relpath(parts, layout)
    joined = os.path.normpath(os.path.join(root, rel))
    assert joined == root or joined.startswith(root + os.sep)
    # it stays exactly where it was put: normpath did not collapse anything
    assert joined == (root if rel == "" else root + os.sep + rel.replace("/", os.sep))
    assert posixpath.normpath("/r/" + rel).startswith("/r")


@given(st.text(), st.sampled_from(["/", ".", None]))
def test_server_roundtrip(name, delim):
    assume(name != "")
    parts = server_to_components(name, delim)
    assert components_to_server(parts, delim) == name


@given(st.text(), st.sampled_from(LAYOUTS))
def test_parts_from_local_never_crashes(rel, layout):
    try:
        parts = parts_from_local(rel, layout)
    except ValueError:
        return
    assert local_relpath(parts, layout) == rel
    assert is_safe_relpath(rel)


# ---------------------------------------------------------------- other tools' names

# (server name as components, maildir++-utf8 candidates, fs candidates): what isync
# 1.4.4 (SubFolders Maildir++; Verbatim, Legacy) and offlineimap 8 (default Maildir,
# sep ".") write for the folder, checked by running them against Dovecot; mailsync's own
# name (local_relpath) is never repeated: in maildir++ (modified UTF-7, as mbsync's) the
# Maildir++ candidate is mailsync's own name where mbsync's spelling is canonical.
PEER_TABLE = [
    (("INBOX",), (), ()),
    (("inbox",), (), ()),
    (("Sent",), (), ()),                                  # everyone's name is "Sent"
    (("Entwürfe",), (".Entw&APw-rfe",), ("Entw&APw-rfe",)),
    (("Projects", "2026"), (), ("Projects/.2026", "Projects.2026")),
    (("Top", "Sub", "Deep"), (), ("Top/.Sub/.Deep", "Top.Sub.Deep")),
    (("INBOX", "Sub"), ("..Sub",), ("INBOX/.Sub", "INBOX.Sub")),
    (("INBOX", "Entwürfe"), ("..Entw&APw-rfe",),
     ("INBOX/Entw&APw-rfe", "INBOX/.Entw&APw-rfe", "INBOX.Entw&APw-rfe")),
    (("A&B",), (".A&-B",), ("A&-B",)),
    (("日本語", "メール"), (".&ZeVnLIqe-.&MOEw,DDr-",),
     ("&ZeVnLIqe-/&MOEw,DDr-", "&ZeVnLIqe-/.&MOEw,DDr-", "&ZeVnLIqe-.&MOEw,DDr-")),
    (("foo.bar",), (), ()),                               # mbsync refuses dots in Maildir++
    (("foo.bar", "x"), (), ("foo.bar/.x", "foo.bar.x")),
    (("100%",), (".100%",), ("100%",)),                   # the peers escape nothing
    (("..",), (), ()),                                    # never a path outside the root
    (("a", ".."), (), ("a/...", "a...")),                 # what Legacy writes; inside
    ((".",), (), ()),
    (("../../evil",), (), ()),
    (("a/../../b",), (), ()),
    ((".hidden",), (), (".hidden",)),
    (("a", "", "b"), (), ()),                             # no peer writes empty names
    (("new",), (), ()),                                   # never a Maildir's own subdir
    (("A", "cur"), (), ("A/.cur", "A.cur")),
    (("x" * 300,), (), ()),                               # longer than a file name
    (("tab\tnl\n",), (".tab&AAk-nl&AAo-",), ("tab&AAk-nl&AAo-",)),   # controls: mUTF-7
]


@pytest.mark.parametrize("parts,mdpp,fs", PEER_TABLE)
def test_peer_relpaths(parts, mdpp, fs):
    own = local_relpath(parts, "maildir++")
    for layout, want in (("maildir++", tuple(p for p in mdpp if p != own)),
                         ("maildir++-utf8", mdpp), ("fs", fs)):
        got = peer_relpaths(parts, layout)
        assert got == want, layout
        assert local_relpath(parts, layout) not in got
        assert len(set(got)) == len(got)
        assert all(is_safe_relpath(rel) for rel in got)


def test_peer_relpaths_unknown_layout_and_bad_names():
    with pytest.raises(ValueError, match="unknown layout"):
        peer_relpaths(("A",), "mbox")
    assert peer_relpaths(("a\udc80",), "fs") == ()


@settings(max_examples=200)
@given(parts_st, st.sampled_from(LAYOUTS))
def test_peer_relpaths_never_leave_the_root(parts, layout):
    root = os.path.normpath("/srv/mail/account")
    for rel in peer_relpaths(parts, layout):
        assert is_safe_relpath(rel) and rel != local_relpath(parts, layout)
        assert all(c.lower() not in ("cur", "new", "tmp") for c in rel.split("/"))
        joined = os.path.normpath(os.path.join(root, rel))
        assert joined.startswith(root + os.sep)
