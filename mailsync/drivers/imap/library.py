"""What the IMAP driver uses of imaplib's and imapclient's private parts, in one list.

imapclient has no public way for a few things the driver needs: to send a command and
read its answer without imapclient's parsing (bodies streamed to files, LIST-STATUS,
NOTIFY, ENABLE, UID EXPUNGE), to read one response at a time during IDLE, to trace the
protocol without secrets, and to refuse an absurd literal before allocating it. For
those it reaches below imapclient into imaplib.IMAP4 (imapclient's `_imap`) and into
imapclient itself. Neither project promises these names, so imapclient is pinned in
pyproject.toml to the versions the suite ran against, and tests/test_imap_library.py
checks that every name below exists on the installed imapclient and Python, and that the
driver (mailsync/imap/) uses no other private name of theirs. Before widening the pin,
run that test against the new version.
"""

from __future__ import annotations

# owner -> the private (or undocumented) names the driver reads, calls or overrides
PRIVATE: dict[str, tuple[str, ...]] = {
    "imapclient.IMAPClient": (
        "_imap",                    # the imaplib.IMAP4 below
        "_timeout",                 # its SocketTimeout, read when creating the IMAP4
        "_create_IMAP4",            # overridden: connections that refuse absurd literals
    ),
    "imapclient.imap4.IMAP4WithTimeout": (
        "_timeout",
    ),
    "imaplib.IMAP4": (
        "_create_socket",           # overridden: a plain port that expects TLS named fast
        "_command",                 # send a command, get its tag (streamed FETCH)
        "_command_complete",        # its tagged answer
        "_simple_command",          # send and wait (LIST-STATUS, NOTIFY, ENABLE, EXPUNGE)
        "_untagged_response",       # collect one kind of untagged answer
        "_get_response",            # read one response (IDLE)
        "_log",                     # silenced: its in-memory log would keep LOGIN's args
        "_mesg",                    # the debug output, routed to the redacting trace
        "_encoding",                # "utf-8" for servers that list 8-bit folder names
        "debug",                    # the debug level
        "untagged_responses",       # untagged answers by kind
        "tagged_commands",          # pending tags
    ),
    "imapclient.imapclient": (
        "_parse_untagged_response",  # one IDLE response parsed
    ),
    "imaplib": (
        "Commands",                 # NOTIFY made known to imaplib
    ),
}
