"""The old name of mailsync.reporting, while work in progress still imports it from here.
Remove once nothing does (grep -rn "mailsync.ports")."""

from mailsync.reporting import Reporter, SilentReporter  # noqa: F401
