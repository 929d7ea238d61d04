"""Dynamic batching of search encodings: requests that arrive together share one model pass.

Each search request hands its checked input (a text, an image, or an image and a text) to a
:class:`Batcher` and waits. One worker thread takes the first waiting request, keeps collecting
for at most ``wait_ms`` milliseconds or until ``max_batch`` requests are there, then encodes each
kind in one batched call (``encode_texts``, ``encode_images``, ``encode_composed``) under the
service's model lock and hands every request its own row. A batch whose call fails is retried one
request at a time, so one bad input fails only its own request. ``max_batch = 1`` encodes every
request on its own, as without batching.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from unifashion.utils.errors import ConfigError

KINDS = ("text", "image", "composed")


@dataclass
class _Request:
    kind: str
    payload: Any
    future: Future = field(default_factory=Future)


@dataclass
class BatchStats:
    """What the worker has done: model passes, requests encoded, and the largest batch."""

    passes: int = 0
    requests: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        self.passes += 1
        self.requests += size
        self.largest = max(self.largest, size)


class Batcher:
    """Collects search encodings from many threads into batched model passes (see the module doc).

    ``encoders`` maps each kind to a function of a list of payloads returning one row per payload."""

    def __init__(
        self,
        encoders: dict[str, Callable[[list[Any]], Any]],
        lock: threading.Lock,
        *,
        max_batch: int = 16,
        wait_ms: float = 5.0,
        on_pass: Callable[[str, int], None] | None = None,
    ):
        if max_batch < 1:
            raise ConfigError(f"batch size: expected at least 1 (1: no batching), got {max_batch}")
        if wait_ms < 0:
            raise ConfigError(f"batch wait: expected 0 ms or more, got {wait_ms}")
        self.encoders = encoders
        self.lock = lock
        self.max_batch = max_batch
        self.wait = wait_ms / 1000
        self.stats = BatchStats()
        self.on_pass = on_pass  # called with (kind, batch size) after every successful model pass
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="search-batcher", daemon=True)
        self._worker.start()

    def encode(self, kind: str, payload: Any, timeout: float | None = 300) -> Any:
        """The encoding of ``payload`` (one row), computed in a batch with whatever else is waiting."""
        if kind not in self.encoders:
            raise ValueError(f"kind: expected one of {', '.join(self.encoders)}, got {kind!r}")
        request = _Request(kind, payload)
        self._queue.put(request)
        return request.future.result(timeout=timeout)

    @property
    def waiting(self) -> int:
        """Requests queued and not yet taken by the worker."""
        return self._queue.qsize()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    # -- the worker ---------------------------------------------------------------------

    def _collect(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, deadline = [first], time.perf_counter() + self.wait
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first) if self.max_batch > 1 else ([first], False)
            for kind in KINDS:
                group = [r for r in batch if r.kind == kind]
                if group:
                    self._encode(kind, group)
            if stop:
                return

    def _encode(self, kind: str, group: list[_Request]) -> None:
        encode = self.encoders[kind]
        try:
            with self.lock:
                rows = encode([r.payload for r in group])
        except Exception as exc:  # each failure goes to its own caller
            if len(group) == 1:
                group[0].future.set_exception(exc)
            else:  # one at a time: only the request at fault fails
                for request in group:
                    self._encode(kind, [request])
            return
        self.stats.record(len(group))
        if self.on_pass is not None:
            self.on_pass(kind, len(group))
        for i, request in enumerate(group):
            request.future.set_result(rows[i])
