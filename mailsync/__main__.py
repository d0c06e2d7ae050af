from mailsync.cli import entry

entry()
