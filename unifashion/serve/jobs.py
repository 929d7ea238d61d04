"""Generation jobs: a bounded queue in front of a small pool of worker threads.

Sampling takes seconds to minutes on a CPU, so generation and try-on requests become jobs:
the request returns a job id at once, ``GET /api/jobs/{id}`` reports progress (denoising step
of the total), and the image is fetched when the job is done. At most ``workers`` jobs run at
once and ``queued`` more may wait; beyond that a new job is refused (HTTP 429) rather than
letting generation take the CPU from search. Finished jobs are kept for ``keep`` jobs.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

Work = Callable[[Callable[[int, int], None]], Image.Image]


@dataclass
class Job:
    id: str
    kind: str
    status: str = "queued"  # queued -> running -> done | failed
    step: int = 0
    steps: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    seconds: float | None = None
    png: bytes | None = None

    def public(self) -> dict:
        out = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "step": self.step,
            "steps": self.steps,
            "error": self.error,
            "seconds": self.seconds,
        }
        if self.status == "done":
            out["image_url"] = f"/api/jobs/{self.id}/image"
        return out


class QueueFull(Exception):
    pass


class JobQueue:
    def __init__(self, workers: int = 1, queued: int = 4, keep: int = 64):
        self.capacity = workers + queued
        self.keep = keep
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generation")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def active(self) -> int:
        with self._lock:
            return sum(j.status in ("queued", "running") for j in self._jobs.values())

    def submit(self, kind: str, work: Work) -> Job:
        """Queue ``work(on_step) -> image``; :class:`QueueFull` when ``capacity`` jobs are pending."""
        with self._lock:
            if sum(j.status in ("queued", "running") for j in self._jobs.values()) >= self.capacity:
                raise QueueFull
            job = Job(uuid.uuid4().hex[:16], kind)
            self._jobs[job.id] = job
            finished = [k for k, j in self._jobs.items() if j.status in ("done", "failed")]
            for k in finished[: max(0, len(finished) - self.keep)]:
                del self._jobs[k]
        self._pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Work) -> None:
        start = time.perf_counter()
        job.status = "running"

        def on_step(done: int, total: int) -> None:
            job.step, job.steps = done, total

        try:
            image = work(on_step)
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            job.png = buf.getvalue()
            job.status = "done"
        except Exception as exc:  # reported through the job, never lost in a thread
            job.error = str(exc) or type(exc).__name__
            job.status = "failed"
        job.seconds = round(time.perf_counter() - start, 3)

    def states(self) -> dict[str, int]:
        """How many of the kept jobs are in each state (queued, running, done, failed)."""
        counts = dict.fromkeys(("queued", "running", "done", "failed"), 0)
        with self._lock:
            for job in self._jobs.values():
                counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
