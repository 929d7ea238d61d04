"""The model lock shared by searches (first) and generation steps (in between)."""

import threading
import time

from unifashion.serve.priority import PriorityLock


def test_a_waiting_search_goes_before_the_next_generation_step():
    lock = PriorityLock(starve_s=10.0)
    order = []
    lock.acquire_low()  # a generation job computes its first step
    searched = threading.Event()

    def search():
        with lock:
            order.append("search")
        searched.set()

    t = threading.Thread(target=search)
    t.start()
    while not lock._high_waiting:  # the search is queued behind the step
        time.sleep(0.001)
    order.append("step 1 done")
    lock.pause()  # between steps: the search goes first
    order.append("step 2")
    lock.release()
    t.join(5)
    assert searched.is_set() and order == ["step 1 done", "search", "step 2"]


def test_one_holder_at_a_time():
    lock = PriorityLock()
    inside, most = [0], [0]
    guard = threading.Lock()

    def work(low):
        for _ in range(50):
            if low:
                lock.acquire_low()
            else:
                lock.__enter__()
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.0005)
            with guard:
                inside[0] -= 1
            lock.release()

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1 and not any(t.is_alive() for t in threads)


def test_generation_is_slowed_by_searches_but_never_starved():
    lock = PriorityLock(starve_s=0.2)
    stop = threading.Event()

    def searches():  # back to back, always one waiting
        while not stop.is_set():
            with lock:
                time.sleep(0.01)

    threads = [threading.Thread(target=searches) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    steps = 0
    lock.acquire_low()
    for _ in range(4):
        steps += 1
        lock.pause()
    lock.release()
    waited = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(5)
    assert steps == 4 and waited < 5 * 0.2 + 1.0  # about one starve_s per step, not forever


def test_a_job_pauses_while_a_search_request_is_in_flight():
    lock = PriorityLock(starve_s=10.0)
    order = []
    lock.acquire_low()
    inside, leave = threading.Event(), threading.Event()

    def request():  # decoding an upload, ranking: no model pass, but the job should wait
        with lock.activity():
            inside.set()
            leave.wait(5)
            order.append("request done")

    t = threading.Thread(target=request)
    t.start()
    inside.wait(5)
    threading.Timer(0.1, leave.set).start()
    lock.pause()  # waits for the request to finish
    order.append("next step")
    lock.release()
    t.join(5)
    assert order == ["request done", "next step"]
