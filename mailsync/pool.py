"""Jobs (an account's folders) over a small pool of connections, one thread each.

The caller's thread works first, on the connection it already has. Extra connections
are opened only once a job says it found work (`busy()`), so a run with nothing to do
never pays for a second login. Each helper thread owns what it opens (a connection,
a state handle) and closes it; a helper that cannot open one simply does not help.
After a job fails with an error that ends the run, no new job is started; jobs already
running finish (each is safe to stop at any point), and the first such error is raised.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

Job = TypeVar("Job")
Res = TypeVar("Res")
Out = TypeVar("Out")


class Pool(Generic[Job, Res, Out]):
    def __init__(self, size: int, open_helper: Callable[[], Res],
                 close_helper: Callable[[Res, bool], None],
                 on_helper_failed: Callable[[BaseException], None]) -> None:
        self.size = max(1, size)
        self.open_helper, self.close_helper = open_helper, close_helper
        self.on_helper_failed = on_helper_failed
        self._lock = threading.Lock()
        self._jobs: list[tuple[int, Job]] = []
        self._outs: dict[int, Out] = {}
        self._errors: list[BaseException] = []
        self._helpers: list[threading.Thread] = []
        self._work: Callable[[Job, Res, Callable[[], None]], Out] | None = None

    def run(self, jobs: list[Job], work: Callable[[Job, Res, Callable[[], None]], Out],
            own: Res) -> list[Out]:
        """work(job, resource, busy) for every job; the outputs in the jobs' order."""
        self._jobs = list(enumerate(jobs))
        self._jobs.reverse()                 # pop() takes them in order
        self._work = work
        try:
            self._drain(own)
        except BaseException as exc:         # KeyboardInterrupt: helpers are daemons
            self._fail(exc)
            raise
        for helper in self._helpers:
            helper.join()
        if self._errors:
            raise self._errors[0]
        if len(self._outs) != len(jobs):
            raise RuntimeError("a folder job ended without an outcome")
        return [self._outs[i] for i in sorted(self._outs)]

    def busy(self) -> None:
        """A job found real work: start the helpers, once, if other jobs wait."""
        with self._lock:
            if self._helpers or self.size == 1 or not self._jobs or self._errors:
                return
            for n in range(min(self.size - 1, len(self._jobs))):
                t = threading.Thread(target=self._helper, name=f"mailsync-{n + 1}",
                                     daemon=True)
                self._helpers.append(t)
                t.start()

    def _next(self) -> tuple[int, Job] | None:
        with self._lock:
            if self._errors or not self._jobs:
                return None
            return self._jobs.pop()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _drain(self, resource: Res) -> None:
        assert self._work is not None
        while (item := self._next()) is not None:
            index, job = item
            try:
                out = self._work(job, resource, self.busy)
            except Exception as exc:         # ends the run; a KeyboardInterrupt ends it now
                self._fail(exc)
                return
            with self._lock:
                self._outs[index] = out

    def _helper(self) -> None:
        if self._next_peek() is None:
            return
        try:
            resource = self.open_helper()
        except Exception as exc:             # the others carry on without this one
            self.on_helper_failed(exc)
            return
        ok = False
        try:
            self._drain(resource)
            ok = not self._errors
        except BaseException as exc:         # never lose a job's outcome silently
            self._fail(exc)
        finally:
            try:
                self.close_helper(resource, ok)
            except Exception:
                pass                         # a failed logout loses nothing

    def _next_peek(self) -> tuple[int, Job] | None:
        with self._lock:
            return self._jobs[-1] if self._jobs and not self._errors else None
