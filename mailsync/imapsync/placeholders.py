"""Headers-first: a large message arrives as its header and a note (a placeholder),
readable in any mail client; the body follows when the user opens or flags it."""

from __future__ import annotations

import re

from mailsync.contracts import Sink

PLACEHOLDER_HEADER = b"X-Mailsync-Placeholder"
PLACEHOLDER_RE = re.compile(rb"^X-Mailsync-Placeholder:\s*size=(\d+)", re.I | re.M)
_MIME_HEADERS = re.compile(rb"^(Content-Type|Content-Transfer-Encoding|MIME-Version):",
                           re.I | re.M)


def placeholder_size(head: bytes) -> int | None:
    """The full size a placeholder names, from the start of a file; None: not one."""
    m = PLACEHOLDER_RE.search(head.split(b"\n\n", 1)[0])
    return int(m.group(1)) if m else None


def placeholder_header(header: bytes) -> bytes:
    """The original header with its MIME structure set aside, so readers show the note."""
    header = header.rstrip(b"\n")
    header = _MIME_HEADERS.sub(lambda m: b"X-Mailsync-Original-" + m.group(0), header)
    return header + b"\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"


def placeholder_note(size: int) -> bytes:
    return (PLACEHOLDER_HEADER + b": size=%d\n\n" % size
            + (f"[mailsync] This message is {size:,} bytes and was downloaded headers-first.\n"
               "Flag it (F) in your mail client, or run `mailsync sync --full`, and the next\n"
               "sync replaces this note with the whole message.\n").encode())


class HeaderRewriter:
    """A sink that turns the header block written into it into a placeholder's."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def write(self, data: bytes) -> None:
        self.sink.write(placeholder_header(data))
