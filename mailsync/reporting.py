"""How an engine reports what it does: the Reporter protocol the CLI implements with rich
output (ui.py), and a reporter that says nothing."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    """How an engine tells the user what it does. Implementations never raise."""

    def transfer_started(self, label: str, messages: int, nbytes: int) -> None:
        """A transfer of this many messages and bytes begins (one progress bar)."""

    def transferred(self, nbytes: int, stored: int | None = None) -> None:
        """One message of the current transfer is done: nbytes its size as planned (as
        the server counts it), stored what it took as the summary counts it (LF line
        ends where the server counts CRLF; None: the same). A transfer's calls all
        come from the thread that started it."""

    def transfer_finished(self) -> None:
        """The current transfer is over (finished or failed)."""

    def warn(self, text: str) -> None:
        """Something the user should know that is not a failure."""

    def error(self, text: str) -> None:
        """A failure beside the run's own result (a failing hook): shown even with -q."""

    def detail(self, text: str) -> None:
        """Shown with -v."""

    def trace(self, direction: str, line: str) -> None:
        """Protocol trace, shown with -vv; secrets are already redacted."""


class SilentReporter:
    """Reports nothing (tests, --quiet)."""

    def transfer_started(self, label: str, messages: int, nbytes: int) -> None:
        pass

    def transferred(self, nbytes: int, stored: int | None = None) -> None:
        pass

    def transfer_finished(self) -> None:
        pass

    def warn(self, text: str) -> None:
        pass

    def error(self, text: str) -> None:
        pass

    def detail(self, text: str) -> None:
        pass

    def trace(self, direction: str, line: str) -> None:
        pass
