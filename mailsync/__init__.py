"""mailsync: keep a local Maildir in step with POP3 and IMAP servers."""

__version__ = "0.1.0"
