"""One model pass at a time, search first: the lock that search passes and generation steps share.

Searches (batched encodings, captions) take it with ``with lock:``; a generation or try-on job
takes it with :meth:`PriorityLock.acquire_low` and hands it back between denoising steps
(:meth:`PriorityLock.pause`), so a search waits for at most one denoising step, not a whole
picture. A search request also marks itself active for its whole life
(:meth:`PriorityLock.activity`: decoding the upload, ranking the catalog), and a job pauses
while one is, so the request's work outside the model pass does not share the two cores with a
denoising step either. A job that has waited ``starve_s`` seconds takes the next turn even while
searches keep coming, so generation slows under load (about one step a second) but never stops.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class PriorityLock:
    def __init__(self, starve_s: float = 1.0):
        self._cond = threading.Condition()
        self._held = False
        self._high_waiting = 0
        self._active = 0  # search requests in flight (activity())
        self._low_due = False  # a low-priority waiter has waited starve_s: it goes next
        self.starve_s = starve_s

    # high priority: searches
    def __enter__(self) -> PriorityLock:
        with self._cond:
            self._high_waiting += 1
            try:
                while self._held or self._low_due:
                    self._cond.wait()
            finally:
                self._high_waiting -= 1
            self._held = True
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    @contextlib.contextmanager
    def activity(self) -> Iterator[None]:
        """A search request in flight: generation steps wait for it to finish (up to ``starve_s``)."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    # low priority: generation jobs
    def acquire_low(self) -> None:
        deadline = time.monotonic() + self.starve_s
        with self._cond:
            while self._held or ((self._high_waiting or self._active) and not self._low_due):
                left = deadline - time.monotonic()
                if left <= 0 and (self._high_waiting or self._active):
                    self._low_due = True  # searches let this job in at the next turn
                self._cond.wait(timeout=None if self._low_due or left <= 0 else left)
            self._low_due = False
            self._held = True

    def pause(self) -> None:
        """Between two steps of a low-priority holder: let waiting searches go first."""
        if self._high_waiting or self._active:
            self.release()
            self.acquire_low()
