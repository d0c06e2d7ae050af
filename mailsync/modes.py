"""The sync modes of an IMAP account: which sides a run may change (man page, SYNC
SEMANTICS, "Modes"). Its own small module so that the config and the command line can
name them without loading the sync decision (syncplan.py costs ~15 ms to import)."""

MODES = ("sync", "pull", "push", "backup")

# What each mode may change: the sync decision, the folder pairing and the account's
# run ask these, never a list of mode names of their own.
CHANGE_SERVER = ("sync", "push")              # uploads, server flags, expunges, new folders
FILL_MAILDIR = ("sync", "pull", "backup")     # downloads, new local folders
DELETE_LOCAL = ("sync", "pull")               # a server expunge deletes the local copy
