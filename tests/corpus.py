"""Deterministic corpus of realistic RFC 5322 messages for tests and benchmarks.

No pytest import: also used by bench/ scripts.

Every message is built from its own ``random.Random(f"...:{seed}:{i}")``, so
message *i* does not depend on *n*: ``make_corpus(10)`` is a prefix of
``make_corpus(2000)``, and the output is byte-identical across runs and
machines (no PYTHONHASHSEED / clock / locale dependence).

Format
------
* LF line endings only (never CR), final newline, header/body separated by a
  blank line, unique ``Message-ID`` (``<i.seed.hex@corpus.mailsync.test>``),
  ``Date`` (increasing with i, various time zones), ``X-Corpus-Index: i``.
* Headers: ~15 % of the messages have RFC 2047 encoded words (UTF-8 B and Q,
  ISO-8859-1 Q) in Subject/From, ~5 % raw UTF-8 (8-bit) Subject/From;
  folded ``Received:`` headers; some In-Reply-To/References/List-Id.
* Bodies: ASCII 7bit text (most), UTF-8 8bit (~10 %), quoted-printable
  (~5 %), multipart/alternative text+html (~10 %).
* ~15 % contain lines beginning with "." -- including a line that is just
  ".", one that is "..", and ".foo" -- to exercise POP3 dot-stuffing; some
  contain body lines beginning with "From ".
* Message ``TINY_INDEX`` (3) is tiny: a few headers and a body consisting of
  the single line "." (``b"...\\n\\n.\\n"``).
* The first 8 messages have fixed features so that even small corpora cover
  them: 0 plain ASCII, 1 dot lines, 2 RFC 2047 headers, 3 tiny, 4 raw UTF-8
  headers + 8bit UTF-8 body, 5 RFC 2047 + quoted-printable + dot lines,
  6 multipart/alternative, 7 a 20 KB base64 attachment; i >= 8 random.

Size distribution
-----------------
* text part: 5 % are 0.3-2 KB, 95 % are 2-20 KB, log-uniform (mean ~8 KB);
  headers add ~0.5-1 KB.
* attachments (multipart/mixed, base64, 76-column lines -- the encoded size
  is ~1.35x the raw size): ``attachment_ratio`` (10 %) of the messages get
  one; raw size log-uniform in [512 B, ``max_attachment``].
* default (``big=False``): ``max_attachment`` = 64 KB; n=2000 is ~22.6 MB
  (median 8.4 KB, largest ~120 KB), n=50 ~0.4 MB -- meant for quick tests.
* ``big=True``: ``max_attachment`` = 6 MB; the random 10 % get 16 KB-768 KB
  and, in addition, every ``big_every``-th message (default 100, i.e. i =
  99, 199, ...) gets one attachment of ``max_attachment/3 .. max_attachment``
  raw (2-6 MB, i.e. 2.7-8.1 MB on the wire).  n=2000 is ~170 MB
  (measured with ``corpus_stats``: seed 1 = 174.6 MB, 214 with
  attachments, median 8.8 KB, largest 7.9 MB; seeds 2 and 3 give 163 and
  192 MB, largest 8.4 MB); generating it takes ~1.5 s.
"""

from __future__ import annotations

import base64
import email.charset
import email.header
import email.quoprimime
import math
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

__all__ = ["make_corpus", "make_message", "corpus_stats", "TINY_INDEX"]

TINY_INDEX = 3
# Fixed features for the first messages, so even make_corpus(8) covers them all.
_SCHEDULE: dict[int, dict] = {
    0: dict(header_mode="ascii", body_mode="plain", dot_lines=False),
    1: dict(header_mode="ascii", body_mode="plain", dot_lines=True),
    2: dict(header_mode="encoded", body_mode="plain", dot_lines=False),
    4: dict(header_mode="raw", body_mode="utf8", dot_lines=False),
    5: dict(header_mode="encoded", body_mode="qp", dot_lines=True),
    6: dict(header_mode="ascii", body_mode="alternative", dot_lines=False),
    7: dict(header_mode="ascii", body_mode="plain", dot_lines=False),  # + attachment
}
KB = 1024
MB = 1024 * 1024

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there all one their we can been has more if will would "
    "mail server message folder sync fetch download mailbox inbox archive report meeting "
    "quarterly budget attached please review thanks regards project update schedule invoice "
    "delivery network config release version patch build test deploy customer support ticket "
    "account password security notice weekly summary minutes agenda draft proposal contract "
    "question answer monday tuesday friday tomorrow yesterday morning evening office remote "
    "coffee lunch team manager engineer design document spreadsheet presentation deadline "
    "follow-up reminder confirm cancel reschedule travel hotel flight train receipt order "
    "shipping tracking number status pending approved rejected urgent fyi note comment"
).split()
_UTF8_WORDS = (
    "Grüße Übersicht Änderung naïve café résumé façade Straße Größe "
    "Привет отчёт 日本語 メール 你好 邮件 Ελληνικά שלום ąćęłńóśźż ŽŠČ"
).split()
_FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert Sybil Trent Victor Walter".split()
_LAST = "Smith Jones Brown Miller Davis Wilson Moore Taylor Anderson Thomas Jackson White Harris Martin".split()
_UTF8_NAMES = ("Jürgen Müller", "Zoë Brontë", "José Núñez", "Søren Kierkegaard", "Ólafur Arnalds",
               "Дмитрий Иванов", "山田 太郎", "Łukasz Żółw", "François Lefèvre")
_TZS = (0, 60, 120, -300, -420, 330, 540, -180)
_DOT_LINES = (".", "..", ".foo starts with a dot", "...", ". space after dot", ".\t")
_ATT_TYPES = (("application/pdf", "pdf"), ("image/png", "png"), ("application/octet-stream", "bin"),
              ("application/zip", "zip"), ("image/jpeg", "jpg"))
_EPOCH = datetime(2023, 1, 2, 8, 0, 0, tzinfo=timezone.utc)


def _rng(seed: int, i: int) -> random.Random:
    return random.Random(f"mailsync-corpus:{seed}:{i}")


def _log_uniform(rng: random.Random, lo: float, hi: float) -> int:
    if hi <= lo:
        return int(lo)
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _text_lines(rng: random.Random, size: int, utf8: bool = False, dots: bool = False,
                from_lines: bool = False) -> list[str]:
    """About *size* bytes of wrapped prose (<= 78 columns), as lines."""
    lines: list[str] = []
    total = 0
    words = _WORDS
    while total < size:
        if rng.random() < 0.12:
            lines.append("")
            total += 1
            continue
        k = rng.randint(6, 12)
        if utf8 and rng.random() < 0.3:
            ws = rng.choices(words, k=k - 2) + rng.choices(_UTF8_WORDS, k=2)
            rng.shuffle(ws)
        else:
            ws = rng.choices(words, k=k)
        line = " ".join(ws)
        if rng.random() < 0.3:
            line = line[0].upper() + line[1:] + "."
        lines.append(line)
        total += len(line.encode()) + 1
    if dots and lines:
        for d in _DOT_LINES:
            lines.insert(rng.randrange(len(lines) + 1), d)
        lines.append(".")  # a lone dot as the very last body line, too
    if from_lines and lines:
        lines.insert(rng.randrange(len(lines) + 1), "From the desk of the editor: see below.")
    return lines


def _encode_word(rng: random.Random, text: str) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        cs = email.charset.Charset("utf-8")  # B encoding
    elif kind == 1:
        cs = email.charset.Charset("utf-8")
        cs.header_encoding = email.charset.QP
    else:
        try:
            text.encode("iso-8859-1")
            cs = email.charset.Charset("iso-8859-1")  # Q encoding
        except UnicodeEncodeError:
            cs = email.charset.Charset("utf-8")
    return email.header.Header(text, charset=cs).encode(linesep="\n")


def _address(rng: random.Random, mode: str) -> str:
    if mode == "ascii":
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        name = f"{first} {last}"
    else:
        name = rng.choice(_UTF8_NAMES)
        first, last = "user", str(rng.randrange(1000))
    addr = f"{first.lower()}.{last.lower()}@example.{rng.choice(('com', 'org', 'net'))}"
    if mode == "ascii":
        return f'"{name}" <{addr}>' if rng.random() < 0.3 else f"{name} <{addr}>"
    if mode == "raw":
        return f"{name} <{addr}>"
    return f"{_encode_word(rng, name)} <{addr}>"


def _subject(rng: random.Random, mode: str) -> str:
    words = rng.choices(_WORDS, k=rng.randint(3, 9))
    if mode != "ascii":
        words[rng.randrange(len(words))] = rng.choice(_UTF8_WORDS)
    s = " ".join(words)
    s = s[0].upper() + s[1:]
    if rng.random() < 0.15:
        s = "Re: " + s
    if mode == "encoded":
        return _encode_word(rng, s)
    return s


def _headers(rng: random.Random, i: int, seed: int, hmode: str, extra: list[str]) -> list[str]:
    tz = timezone(timedelta(minutes=rng.choice(_TZS)))
    date = (_EPOCH + timedelta(minutes=37 * i, seconds=rng.randrange(60))).astimezone(tz)
    msgid = f"<{i}.{seed}.{rng.getrandbits(48):012x}@corpus.mailsync.test>"
    hops = []
    for h in range(rng.randint(1, 3)):
        hops.append(
            f"Received: from mx{h}.example.net (mx{h}.example.net [192.0.2.{rng.randrange(1, 255)}])\n"
            f"\tby mail.example.org (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\n"
            f"\tfor <rcpt@example.org>; {format_datetime(date)}"
        )
    hdrs = [
        "Return-Path: <bounce@example.net>",
        *hops,
        f"Date: {format_datetime(date)}",
        f"From: {_address(rng, hmode)}",
        f"To: {_address(rng, 'ascii')}",
        f"Subject: {_subject(rng, hmode)}",
        f"Message-ID: {msgid}",
    ]
    if rng.random() < 0.2:
        ref = f"<{rng.getrandbits(64):016x}@corpus.mailsync.test>"
        hdrs += [f"In-Reply-To: {ref}", f"References: {ref}"]
    if rng.random() < 0.1:
        hdrs.append("List-Id: Project discussion <project.lists.example.org>")
    if rng.random() < 0.3:
        hdrs.append(f"X-Mailer: CorpusMailer {rng.randint(1, 9)}.{rng.randint(0, 20)}")
    hdrs.append(f"X-Corpus-Index: {i}")
    hdrs += extra
    return hdrs


def _wrap_b64(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii")  # 76 columns, LF, final LF


def make_message(
    i: int,
    size: int = 8 * KB,
    *,
    seed: int = 1,
    attachment: int = 0,
    header_mode: str | None = None,
    body_mode: str | None = None,
    dot_lines: bool | None = None,
) -> bytes:
    """One deterministic message (LF line endings).

    *size*: approximate bytes of body text; *attachment*: raw bytes of a
    base64 attachment (0 = none).  *header_mode*: "ascii" | "encoded"
    (RFC 2047) | "raw" (8-bit UTF-8); *body_mode*: "plain" | "utf8" | "qp" |
    "alternative"; *dot_lines*: include lines starting with ".".  ``None``
    means: chosen at random from the message's own seeded generator.
    ``i == TINY_INDEX`` is NOT special here (see make_corpus).
    """
    rng = _rng(seed, i)
    if header_mode is None:
        r = rng.random()
        header_mode = "encoded" if r < 0.15 else "raw" if r < 0.20 else "ascii"
    if body_mode is None:
        r = rng.random()
        body_mode = ("utf8" if r < 0.10 else "qp" if r < 0.15 else
                     "alternative" if r < 0.25 else "plain")
    if dot_lines is None:
        dot_lines = rng.random() < 0.15
    from_lines = rng.random() < 0.05

    boundary_n = rng.getrandbits(64)
    text_lines = _text_lines(rng, size, utf8=body_mode in ("utf8", "qp"), dots=dot_lines,
                             from_lines=from_lines)
    text = "\n".join(text_lines) + "\n"

    def text_part() -> tuple[list[str], str]:
        if body_mode == "utf8":
            return (["Content-Type: text/plain; charset=utf-8",
                     "Content-Transfer-Encoding: 8bit"], text)
        if body_mode == "qp":
            enc = email.quoprimime.body_encode(text, maxlinelen=76, eol="\n")
            if not enc.endswith("\n"):
                enc += "\n"
            return (["Content-Type: text/plain; charset=utf-8",
                     "Content-Transfer-Encoding: quoted-printable"], enc)
        return (["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"], text)

    def alternative(b: str) -> tuple[list[str], str]:
        html = "<html><body>\n" + "".join(
            f"<p>{ln}</p>\n" for ln in text_lines if ln and not ln.startswith(".")
        ) + "</body></html>\n"
        body = (f"This is a multi-part message in MIME format.\n\n--{b}\n"
                "Content-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n"
                f"{text}\n--{b}\n"
                "Content-Type: text/html; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n"
                f"{html}\n--{b}--\n")
        return ([f'Content-Type: multipart/alternative; boundary="{b}"'], body)

    if body_mode == "alternative":
        part_hdrs, part_body = alternative(f"=_alt_{boundary_n:016x}")
    else:
        part_hdrs, part_body = text_part()

    if attachment:
        ctype, ext = rng.choice(_ATT_TYPES)
        blob = rng.randbytes(attachment)
        b = f"=_mix_{boundary_n:016x}"
        body = (f"This is a multi-part message in MIME format.\n\n--{b}\n"
                + "\n".join(part_hdrs) + "\n\n" + part_body
                + f"\n--{b}\n"
                f'Content-Type: {ctype}; name="file{i}.{ext}"\n'
                "Content-Transfer-Encoding: base64\n"
                f'Content-Disposition: attachment; filename="file{i}.{ext}"\n\n'
                + _wrap_b64(blob)
                + f"\n--{b}--\n")
        mime_hdrs = ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{b}"']
    else:
        body = part_body
        mime_hdrs = ["MIME-Version: 1.0", *part_hdrs]

    hdrs = _headers(rng, i, seed, header_mode, mime_hdrs)
    return ("\n".join(hdrs) + "\n\n" + body).encode("utf-8")


def _tiny_message(i: int, seed: int) -> bytes:
    rng = _rng(seed, i)
    date = _EPOCH + timedelta(minutes=37 * i)
    return (
        f"From: tiny@example.org\n"
        f"To: rcpt@example.org\n"
        f"Subject: tiny\n"
        f"Date: {format_datetime(date)}\n"
        f"Message-ID: <{i}.{seed}.{rng.getrandbits(48):012x}@corpus.mailsync.test>\n"
        f"X-Corpus-Index: {i}\n"
        "\n"
        ".\n"
    ).encode("ascii")


def make_corpus(
    n: int,
    seed: int = 1,
    *,
    big: bool = False,
    big_every: int | None = None,
    max_attachment: int | None = None,
    attachment_ratio: float = 0.10,
) -> list[bytes]:
    """*n* deterministic messages (see the module docstring for the distribution).

    ``big=True`` selects the ~170 MB-for-2000 profile; *big_every* and
    *max_attachment* override the profile's values (``big_every=0`` disables
    the periodic big attachments).
    """
    if max_attachment is None:
        max_attachment = 6 * MB if big else 64 * KB
    if big_every is None:
        big_every = 100 if big else 0
    out: list[bytes] = []
    for i in range(n):
        if i == TINY_INDEX:
            out.append(_tiny_message(i, seed))
            continue
        plan = _rng(seed + 7919, i)  # size plan, independent of the content stream
        text = _log_uniform(plan, 300, 2 * KB) if plan.random() < 0.05 else _log_uniform(plan, 2 * KB, 20 * KB)
        att = 0
        if i == 7:
            att = min(max_attachment, 20 * KB)
        elif big_every and i % big_every == big_every - 1:
            att = plan.randint(max(max_attachment // 3, 512), max_attachment)
        elif plan.random() < attachment_ratio:
            hi = min(max_attachment, 768 * KB) if big else max_attachment
            lo = min(16 * KB, hi) if big else 512
            att = _log_uniform(plan, lo, hi)
        out.append(make_message(i, text, seed=seed, attachment=att, **_SCHEDULE.get(i, {})))
    return out


def corpus_stats(msgs: list[bytes]) -> dict[str, float]:
    """count, total/min/max/median bytes and number with attachments."""
    sizes = sorted(len(m) for m in msgs)
    return {
        "count": len(sizes),
        "total_bytes": sum(sizes),
        "min": sizes[0] if sizes else 0,
        "median": sizes[len(sizes) // 2] if sizes else 0,
        "max": sizes[-1] if sizes else 0,
        "with_attachment": sum(b"Content-Disposition: attachment" in m for m in msgs),
    }
