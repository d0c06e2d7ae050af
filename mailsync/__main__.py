from mailsync.cli.app import entry

entry()
