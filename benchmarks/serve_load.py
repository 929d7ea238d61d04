"""Concurrent load on ``unifashion serve`` over loopback.

    python benchmarks/serve_load.py --model MODEL --catalog CATALOG [--clients 16] [--seconds 30]
    python benchmarks/serve_load.py --model MODEL --catalog CATALOG --clients 1,4,16,64 \
        --compare-batching --seconds 20 --no-generation-round

Starts the server in its own process, then ``--clients`` threads each send composed searches
(a catalog product's image + a modification text) back to back for ``--seconds``. A second
round repeats it while one more client keeps a generation job running the whole time, to see
what generation costs search. Prints JSON per round: requests, throughput, p50 / p99 latency,
and errors (any non-200 answer or failed connection). ``--clients`` takes a comma-separated
list (one round each). ``--compare-batching`` runs every round twice in the same run, against a
server with dynamic batching off (``--batch-size 1``) and one with it on (``--batch-size``, 16 by
default), and prints their throughput ratio and p99 latencies side by side.

``--saturate`` doubles the clients from 1 (search only) until a round has errors or a p99 over 5 s (or
``--max-clients``), and prints the rounds as a table. Rounds with a generation job running report how much
the search p99 grew (``p99_growth_with_generation``; the server runs generation steps between search
passes, so it should stay under 1.5x).

``--model-pass`` measures, in this process and without HTTP, what batching can gain at most: the
seconds of ``encode_composed`` for batches of 1, 4 and 16 catalog images (best of 5, image features
not cached, as the server does for uploads), per request, and their ratio to a batch of one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

CHANGES = ("is red", "has long sleeves", "is shorter and blue", "is black with a floral print", "has no sleeves")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, catalog: str, port: int, batch_size: int = 16) -> subprocess.Popen:
    command = [sys.executable, "-m", "unifashion", "serve", "--model", model, "--catalog", catalog]
    # The server writes a JSON line per request to stderr: a file, since a pipe nobody reads would fill
    # and stall it.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--batch-size", str(batch_size), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    end = time.time() + 300
    while time.time() < end:
        if proc.poll() is not None:
            log.seek(0)
            raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start in 300 s")


def load_round(url: str, images: list[bytes], clients: int, seconds: float, with_generation: bool) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.time() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            n = 0
            while time.time() < stop:
                image = images[(i * 7 + n) % len(images)]
                t = time.perf_counter()
                try:
                    r = http.post(
                        "/api/search/composed",
                        files={"image": ("ref.png", image, "image/png")},
                        data={"text": CHANGES[(i + n) % len(CHANGES)], "k": "12"},
                    )
                    ok = r.status_code == 200 and len(r.json()["results"]) == 12
                    err = None if ok else f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as exc:
                    err = repr(exc)
                with lock:
                    latencies.append(time.perf_counter() - t)
                    if err:
                        errors.append(err)
                n += 1

    generated = {"jobs": 0, "seconds": []}

    def generation() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.time() < stop:
                r = http.post("/api/generate", data={"text": "a green striped shirt", "seed": str(generated["jobs"])})
                if r.status_code != 202:
                    time.sleep(0.5)
                    continue
                job = r.json()
                while True:
                    state = http.get(f"/api/jobs/{job['id']}").json()
                    if state["status"] in ("done", "failed"):
                        break
                    time.sleep(0.2)
                generated["jobs"] += 1
                generated["seconds"].append(state["seconds"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    if with_generation:
        threads.append(threading.Thread(target=generation))
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    out = {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": len(errors),
        "first_errors": errors[:3],
    }
    if with_generation:
        out["generation_jobs_done"] = generated["jobs"]
        out["generation_job_seconds"] = generated["seconds"]
    return out


def run_server_rounds(args, images, batch_size: int, clients: list[int]) -> dict:
    port = free_port()
    proc = start_server(args.model, args.catalog, port, batch_size)
    url = f"http://127.0.0.1:{port}"
    rounds: dict = {}
    try:
        for n in clients:
            rounds[str(n)] = {"search_only": load_round(url, images, n, args.seconds, False)}
            print(json.dumps({"batch_size": batch_size, **rounds[str(n)]["search_only"]}), flush=True)
            if not args.no_generation_round:
                both = load_round(url, images, n, args.seconds, True)
                both["p99_growth_with_generation"] = round(
                    both["p99_ms"] / max(rounds[str(n)]["search_only"]["p99_ms"], 1e-9), 2
                )
                rounds[str(n)]["search_with_generation"] = both
                print(json.dumps({"batch_size": batch_size, "with_generation": both}), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rounds


def saturate(args, images) -> list[dict]:
    """Search-only rounds at 1, 2, 4, ... clients until errors or p99 > 5 s (or ``--max-clients``)."""
    port = free_port()
    proc = start_server(args.model, args.catalog, port, args.batch_size)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        n = 1
        while n <= args.max_clients:
            row = load_round(url, images, n, args.seconds, False)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if row["errors"] or row["p99_ms"] > 5000:
                break
            n *= 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print("\n| clients | requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['throughput_rps']} | {r['p50_ms']:,} | {r['p99_ms']:,} | {r['errors']} |")
    return rows


def model_pass(model_path: str, images: list[bytes], sizes=(1, 4, 16), repeats: int = 5) -> dict:
    import io

    from PIL import Image

    from unifashion.pipelines.unifashion import UniFashion

    model = UniFashion.from_pretrained(model_path)
    model.feature_cache.enabled = False
    pictures = [Image.open(io.BytesIO(b)).convert("RGB") for b in images[: max(sizes)]]
    out: dict = {}
    for n in sizes:
        best = min(_timed(lambda n=n: model.encode_composed(pictures[:n], ["is red"] * n)) for _ in range(repeats))
        out[str(n)] = {"ms": round(best * 1000, 1), "ms_per_request": round(best * 1000 / n, 1)}
    single = out[str(sizes[0])]["ms_per_request"]
    for row in out.values():
        row["per_request_vs_single"] = round(row["ms_per_request"] / single, 2)
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--clients", default="16", help="clients of each round, comma-separated (e.g. 1,4,16,64)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--no-generation-round", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16, help="the server's --batch-size")
    parser.add_argument("--compare-batching", action="store_true", help="also run every round with --batch-size 1")
    parser.add_argument("--model-pass", action="store_true", help="only time encode_composed by batch size")
    parser.add_argument("--saturate", action="store_true", help="double the clients until errors or p99 > 5 s")
    parser.add_argument("--max-clients", type=int, default=512)
    args = parser.parse_args()
    from unifashion.catalog.store import Catalog

    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    cat = Catalog.open(args.catalog)
    images = [cat.image(pid)[0] for pid in cat.ids[:64]]
    if args.model_pass:
        print(json.dumps({"encode_composed": model_pass(args.model, images)}, indent=2))
        return
    if args.saturate:
        saturate(args, images)
        return
    result: dict = {"products": len(cat), "cpu_cores": os.cpu_count(), "seconds_per_round": args.seconds}
    settings = [1, args.batch_size] if args.compare_batching else [args.batch_size]
    for batch_size in settings:
        result[f"batch_size_{batch_size}"] = run_server_rounds(args, images, batch_size, clients)
    if args.compare_batching:
        off, on = result["batch_size_1"], result[f"batch_size_{args.batch_size}"]
        result["comparison"] = {
            n: {
                "throughput_ratio": round(
                    on[n]["search_only"]["throughput_rps"] / max(off[n]["search_only"]["throughput_rps"], 1e-9), 2
                ),
                "p50_ms_off_on": [off[n]["search_only"]["p50_ms"], on[n]["search_only"]["p50_ms"]],
                "p99_ms_off_on": [off[n]["search_only"]["p99_ms"], on[n]["search_only"]["p99_ms"]],
            }
            for n in map(str, clients)
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
