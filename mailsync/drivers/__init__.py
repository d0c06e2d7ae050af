"""The drivers: what talks to a server or to the disk. imap (over imapclient) and maildir
implement the contracts of mailsync.contracts; pop3 is the POP3 fetch's own."""
