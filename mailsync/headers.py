"""What a message's header says that the sync needs: its Message-ID, and whether a
server can search for it. Pure: bytes in, values out."""

from __future__ import annotations

from mailsync.adoption import header_field


def parse_message_id(header: bytes | None) -> str | None:
    """The Message-ID from a header block or a HEADER.FIELDS (MESSAGE-ID) answer
    (unfolded), or None."""
    return header_field(header, "message-id")


def login_safe(text: str) -> bool:
    """Printable ASCII only: what a quoted IMAP string (LOGIN, SEARCH HEADER) can carry."""
    return all(" " <= ch <= "~" for ch in text)


def searchable(message_id: str | None) -> bool:
    """A Message-ID a SEARCH HEADER can look for: not empty, printable ASCII."""
    return bool(message_id) and login_safe(message_id)
