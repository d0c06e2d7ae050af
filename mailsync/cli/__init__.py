"""The command line: the click application (app), its commands, and everything the user
sees of a run (ui: progress, tables, summaries, JSON)."""
