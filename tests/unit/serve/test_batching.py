"""Dynamic batching of search encodings: concurrent requests share model passes, each gets its own row."""

import threading
import time

import numpy as np
import pytest

from unifashion.serve.batching import Batcher
from unifashion.utils.errors import ConfigError


def _concurrently(batcher, kind, payloads):
    results, errors = [None] * len(payloads), [None] * len(payloads)
    go = threading.Barrier(len(payloads))

    def client(i):
        go.wait()
        try:
            results[i] = batcher.encode(kind, payloads[i])
        except Exception as exc:
            errors[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def _slow_squares(calls):
    def encode(xs):
        calls.append(list(xs))
        time.sleep(0.02)  # a model pass: requests pile up meanwhile
        if any(x < 0 for x in xs):
            raise ValueError("negative input")
        return np.asarray([[x * x] for x in xs])

    return encode


def test_concurrent_requests_share_passes_and_each_gets_its_own_row():
    calls = []
    batcher = Batcher({"text": _slow_squares(calls)}, threading.Lock(), max_batch=8, wait_ms=20)
    results, errors = _concurrently(batcher, "text", list(range(32)))
    assert errors == [None] * 32
    assert [int(r[0]) for r in results] == [i * i for i in range(32)]
    assert batcher.stats.requests == 32 and batcher.stats.passes == len(calls) < 32
    assert batcher.stats.largest > 1 and max(len(c) for c in calls) <= 8
    batcher.close()


def test_batch_size_one_is_one_pass_per_request():
    calls = []
    batcher = Batcher({"text": _slow_squares(calls)}, threading.Lock(), max_batch=1, wait_ms=20)
    results, _ = _concurrently(batcher, "text", list(range(6)))
    assert [int(r[0]) for r in results] == [i * i for i in range(6)]
    assert batcher.stats.passes == 6 and batcher.stats.largest == 1
    batcher.close()


def test_a_failing_input_fails_only_its_own_request():
    calls = []
    batcher = Batcher({"text": _slow_squares(calls)}, threading.Lock(), max_batch=8, wait_ms=50)
    payloads = [1, 2, -3, 4, 5]
    results, errors = _concurrently(batcher, "text", payloads)
    assert isinstance(errors[2], ValueError) and results[2] is None
    assert [int(results[i][0]) for i in (0, 1, 3, 4)] == [1, 4, 16, 25]
    batcher.close()


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="batch size: expected at least 1"):
        Batcher({}, threading.Lock(), max_batch=0)
    with pytest.raises(ConfigError, match="batch wait"):
        Batcher({}, threading.Lock(), wait_ms=-1)
