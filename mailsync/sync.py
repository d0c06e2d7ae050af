"""The IMAP sync's entry point, kept under its old name for callers not yet moved:
the sync lives in mailsync.imapsync (see there)."""

from mailsync.imapsync.account import SyncOptions, sync_account

__all__ = ["SyncOptions", "sync_account"]
