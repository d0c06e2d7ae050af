"""The two-way IMAP sync.

- account: one account's run, the composition root: connects the drivers (IMAP,
  Maildir, state), pairs the folders, runs them over one or more connections.
- folder: the engine, one folder pairing: settle -> snapshot -> plan -> execute, through
  the driver contracts (mailsync.contracts) alone.
- recovery: settling what a crash left (the state's journal of intents).
- localmoves: messages the user moved between local folders, moved on the server.
- placeholders: headers-first messages, and the notes that stand for their bodies.
- describe: a plan in words, for --dry-run.

The decision itself is the pure mailsync.imapsync.plan.plan_folder.
"""
