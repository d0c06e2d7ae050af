"""Gmail shows a message in every label it has, each label a folder, with one
X-GM-MSGID in all of them: each message is downloaded once, and copied locally into the
other folders it is in, in the same run and in later ones (a label added next week costs
no download)."""

from __future__ import annotations

from typing import Callable, Iterable

from mailsync.contracts import LocalFolder
from mailsync.state import State


class GmailCopies:
    """Where each Gmail message (by X-GM-MSGID) is stored locally: this run's downloads,
    then the state's record of earlier runs'. open_folder: a synced folder's name -> its
    local folder (None when it cannot be opened)."""

    def __init__(self, state: State,
                 open_folder: Callable[[str], LocalFolder | None]) -> None:
        self.state, self.open_folder = state, open_folder
        self._this_run: dict[int, tuple[LocalFolder, str]] = {}

    def find(self, gm_msgid: int) -> tuple[LocalFolder, str] | None:
        """A local folder and key holding the message, if any is known; the file may be
        gone since (the caller reads it, or downloads after all)."""
        found = self._this_run.get(gm_msgid)
        if found is not None:
            return found
        recorded = self.state.gmail_copy(gm_msgid)
        if recorded is None:
            return None
        local = self.open_folder(recorded[0])
        return (local, recorded[1]) if local is not None else None

    def note(self, folder: str, local: LocalFolder, copies: Iterable[tuple[int, str]]) -> None:
        """These messages (X-GM-MSGID, key) were downloaded into folder."""
        copies = list(copies)
        for gm_msgid, key in copies:
            self._this_run.setdefault(gm_msgid, (local, key))
        if copies:
            self.state.note_gmail_copies(folder, copies)
