"""The sync modes of an IMAP account: which sides a run may change (man page, SYNC
SEMANTICS, "Modes"). Its own small module so that the config and the command line can
name them without loading the sync decision (syncplan.py costs ~15 ms to import)."""

MODES = ("sync", "pull", "push", "backup")
