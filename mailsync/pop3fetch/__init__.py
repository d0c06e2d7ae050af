"""The POP3 fetch: one account's run (account), the pure decision of what to download
and delete (plan), and delivery through an MDA or LMTP instead of the Maildir (deliver)."""
