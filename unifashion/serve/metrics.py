"""Prometheus metrics and one JSON log line per request.

``GET /metrics`` (Prometheus text format) exposes, per app:

* ``unifashion_requests_total{method, route, status}`` and ``unifashion_request_seconds{method, route}``
  (a histogram): every request, labelled by its route template (``/api/products/{product_id}``, so ids
  do not multiply the series; ``unmatched`` for paths without a route);
* ``unifashion_search_batch_size{kind}`` (a histogram of requests per batched model pass) and
  ``unifashion_search_queue_depth`` (search encodings waiting for the batcher);
* ``unifashion_jobs{state}``: generation / try-on jobs queued, running, done and failed.

Each request is also logged as one JSON object (logger ``unifashion.serve.access``: time, method, path,
route, status, milliseconds, client address), which ``unifashion serve`` writes to stderr.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

ACCESS_LOG = logging.getLogger("unifashion.serve.access")
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _Jobs:
    """Collects the job states at scrape time."""

    def __init__(self, states: Callable[[], dict[str, int]]):
        self.states = states

    def collect(self):
        family = GaugeMetricFamily("unifashion_jobs", "Generation and try-on jobs by state", labels=["state"])
        for state, count in sorted(self.states().items()):
            family.add_metric([state], count)
        yield family


class Metrics:
    """The metrics of one app (its own registry: several apps in one process do not collide)."""

    def __init__(self, queue_depth: Callable[[], int], job_states: Callable[[], dict[str, int]]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "unifashion_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "unifashion_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "unifashion_search_batch_size",
            "Search requests encoded per model pass",
            ["kind"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        depth = Gauge("unifashion_search_queue_depth", "Search encodings waiting", registry=self.registry)
        depth.set_function(queue_depth)
        self.registry.register(_Jobs(job_states))

    def observe_pass(self, kind: str, size: int) -> None:
        self.batch_size.labels(kind).observe(size)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_of(scope: dict) -> str:
    """The route template a request matched (``unmatched`` when none did)."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def log_request(method: str, path: str, route: str, status: int, seconds: float, client: str | None) -> None:
    if ACCESS_LOG.isEnabledFor(logging.INFO):
        ACCESS_LOG.info(
            json.dumps(
                {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "client": client,
                },
                separators=(",", ":"),
            )
        )
