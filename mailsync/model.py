"""The old name of mailsync.results, while work in progress still imports it from here.
Remove once nothing does (grep -rn "mailsync.model")."""

from mailsync.results import COUNTS, AccountResult, Counts, FolderResult  # noqa: F401
