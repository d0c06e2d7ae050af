"""Connections per server host, shared by the accounts of one run.

A provider counts the connections from one client (Gmail: at most 15 at once per
user, and it throttles a busy address); an account may already use several
(`connections`). Before an account starts, the engine takes slots for it here: at
least one, waiting until one is free, and as many more as its `connections` asks
for that are free at that moment; the account then runs with that many. So the
connections open to a host never exceed its `max_connections_per_host`, and an
account never waits for a second slot while holding its first (no deadlock).
"""

from __future__ import annotations

import threading


class HostBudget:
    def __init__(self) -> None:
        self._free = threading.Condition()
        self._used: dict[str, int] = {}

    @staticmethod
    def key(host: str) -> str:
        return host.strip().lower().rstrip(".")

    def take(self, host: str, want: int, limit: int) -> int:
        """Slots for one account: blocks until at least one is free under limit."""
        key, want, limit = self.key(host), max(1, want), max(1, limit)
        with self._free:
            while self._used.get(key, 0) >= limit:
                self._free.wait(0.5)   # a timeout: a signal is still handled
            granted = min(want, limit - self._used.get(key, 0))
            self._used[key] = self._used.get(key, 0) + granted
            return granted

    def give(self, host: str, slots: int) -> None:
        key = self.key(host)
        with self._free:
            self._used[key] = max(0, self._used.get(key, 0) - slots)
            self._free.notify_all()

    def in_use(self, host: str) -> int:
        with self._free:
            return self._used.get(self.key(host), 0)
