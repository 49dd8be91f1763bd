"""`visionpipe serve` under load, on loopback: latency and throughput of raw-bytes requests.

    .venv/bin/python benchmarks/serve_load.py --export EXPORT_DIR
        [--concurrency 1,8,32] [--requests 400] [--max-seconds 60] [--images 64] [--soak SECONDS]

For each concurrency C, C client threads (one keep-alive connection each) send
`--requests` v2 infer requests of one PNG (real digits, at the model's size) to a local
server without prediction logging and to one with it (a local folder, every request
logged), both running, in three alternating rounds; the same work in-process (decode + `core.answer` on the same file, C threads)
is the baseline whose ratio shows the server's overhead. Each run stops at
`--max-seconds`. p50/p99 are over the requests answered; every request must be a 200.
With `--soak SECONDS`, instead: the largest concurrency's clients for that long, every
fourth request a bad one (text, a truncated PNG, a 50-megapixel PNG, a wrong shape),
counting good requests that failed and bad ones not refused with a 4xx, and sampling
the server's resident memory each second. Prints one JSON object. The clients share the machine's CPUs with the server: on a
small machine the numbers include the clients' cost.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VISIONPIPE = str(Path(sys.executable).parent / "visionpipe")


def digit_pngs(size: int, count: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for n in range(count):
        pixels = (digits.images[n] * 255 / 16).astype(np.uint8)
        buffer = io.BytesIO()
        image = Image.fromarray(pixels, "L").resize((size, size)).convert("RGB")
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(export: str, log: str | None):
    port = free_port()
    args = [VISIONPIPE, "serve", export, "--port", str(port), "--name", "m"]
    if log:
        args += ["--log", log]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError("the server did not start")


def summary(latencies: list[float], elapsed: float, failed: int) -> dict:
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "failed": failed,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "per_second": round(len(latencies) / elapsed, 1),
    }


def run_load(work, concurrency: int, requests: int, max_seconds: float, latencies=None) -> dict:
    """`work(n)` -> True (answered) from `concurrency` threads, `requests` calls in all
    (each latency also appended to `latencies` when given)."""
    stop = time.monotonic() + max_seconds
    latencies = [] if latencies is None else latencies
    failed = 0

    def client(index: int):
        nonlocal failed
        state = {}
        for n in range(index, requests, concurrency):
            if time.monotonic() > stop:
                return
            begun = time.perf_counter()
            ok = work(n, state)
            latencies.append(time.perf_counter() - begun)
            failed += 0 if ok else 1

    begun = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    return summary(latencies, time.perf_counter() - begun, failed)


def http_work(port: int, bodies: list[bytes]):
    def work(n: int, state: dict) -> bool:
        if "connection" not in state:
            state["connection"] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection = state["connection"]
        headers = {"content-type": "application/json"}
        connection.request("POST", "/v2/models/m/infer", bodies[n % len(bodies)], headers)
        response = connection.getresponse()
        response.read()
        return response.status == 200

    return work


def in_process_work(served, blobs: list[bytes]):
    from components.serve import core
    from components.serve.inputs import Limits, decode_images

    def work(n: int, state: dict) -> bool:
        decoded = decode_images([blobs[n % len(blobs)]], served.size, Limits())
        return bool(core.answer(served, decoded, None, 5))

    return work


def alternate(servers: dict, bodies: list[bytes], level: int, args, rounds: int = 3) -> dict:
    """Each server `rounds` times in turn, `--requests / rounds` requests a round; the
    rounds' latencies pooled and their times summed."""
    pooled = {label: {"latencies": [], "elapsed": 0.0, "failed": 0} for label in servers}
    for _ in range(rounds):
        for label, (_, port) in servers.items():
            latencies: list[float] = []
            begun = time.perf_counter()
            found = run_load(
                http_work(port, bodies),
                level,
                args.requests // rounds,
                args.max_seconds / rounds,
                latencies,
            )
            pooled[label]["elapsed"] += time.perf_counter() - begun
            pooled[label]["latencies"] += latencies
            pooled[label]["failed"] += found["failed"]
    return {
        label: summary(p["latencies"], p["elapsed"], p["failed"]) for label, p in pooled.items()
    }


def rss_mb(pid: int) -> float:
    """The server's resident memory, from /proc (the launcher execs it: same pid)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bad_bodies(blobs: list[bytes]) -> list[bytes]:
    """Requests that must be refused: text, a truncated PNG, a 50-megapixel PNG, a tensor
    of the wrong shape."""
    from PIL import Image

    huge = io.BytesIO()
    Image.new("L", (10_000, 5_000)).save(huge, format="PNG")

    def body(data: bytes) -> bytes:
        item = {"name": "image", "shape": [1], "datatype": "BYTES",
                "data": [base64.b64encode(data).decode()]}  # fmt: skip
        return json.dumps({"inputs": [item]}).encode()

    shape = {"name": "pixels", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}
    return [
        body(b"not an image\n"),
        body(blobs[0][: len(blobs[0]) // 2]),
        body(huge.getvalue()),
        json.dumps({"inputs": [shape]}).encode(),
    ]


def soak(export: str, blobs: list[bytes], bodies: list[bytes], seconds: float, level: int):
    """`level` clients for `seconds`, every fourth request a bad one: good requests that
    failed (must be 0), bad ones not refused with a 4xx (must be 0), and the server's RSS
    sampled each second (flat: the last minute's within a few MB of the first's)."""
    process, port = start(export, None)
    bad = bad_bodies(blobs)
    stop = time.monotonic() + seconds
    counts = {"good": 0, "good_failed": 0, "bad": 0, "bad_not_4xx": 0}
    memory = []
    lock = threading.Lock()

    def client(index: int):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n = index
        while time.monotonic() < stop:
            is_bad = n % 4 == 3
            body = bad[n % len(bad)] if is_bad else bodies[n % len(bodies)]
            connection.request("POST", "/v2/models/m/infer", body,
                               {"content-type": "application/json"})  # fmt: skip
            response = connection.getresponse()
            response.read()
            with lock:
                if is_bad:
                    counts["bad"] += 1
                    counts["bad_not_4xx"] += not 400 <= response.status < 500
                else:
                    counts["good"] += 1
                    counts["good_failed"] += response.status != 200
            n += level

    try:
        with concurrent.futures.ThreadPoolExecutor(level + 1) as pool:
            clients = [pool.submit(client, i) for i in range(level)]
            while time.monotonic() < stop:
                memory.append(round(rss_mb(process.pid), 1))
                time.sleep(1)
            for done in clients:
                done.result()
    finally:
        process.terminate()
        process.wait(60)
    minute = max(1, min(60, len(memory) // 3))
    return {
        **counts,
        "seconds": seconds,
        "rss_mb_first_minute_max": max(memory[:minute]),
        "rss_mb_last_minute_max": max(memory[-minute:]),
        "rss_mb_max": max(memory),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True, help="an export folder (or REGISTRY/MODEL)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-seconds", type=float, default=60)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--soak", type=float, default=0, help="seconds of good+bad load instead")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    from components.serve.model import open_served

    served = open_served(args.export)
    blobs = digit_pngs(served.size, args.images)
    work = in_process_work(served, blobs)
    bodies = [
        json.dumps(
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                         "data": [base64.b64encode(b).decode()]}]}
        ).encode()
        for b in blobs
    ]  # fmt: skip
    if args.soak:
        found = soak(args.export, blobs, bodies, args.soak, max(levels))
        print(json.dumps(found, indent=1))
        return found
    result = {"file": served.file.name, "cpus": len(os.sched_getaffinity(0)), "levels": {}}
    for level in levels:
        result["levels"][level] = {
            "in_process": run_load(work, level, args.requests, args.max_seconds)
        }
    with tempfile.TemporaryDirectory() as logs:
        # both servers up at once, measured in alternating rounds: a shared machine's noise
        # falls on both alike
        servers = {"server": start(args.export, None), "server_logging": start(args.export, logs)}
        try:
            for level in levels:
                for label, found in alternate(servers, bodies, level, args).items():
                    result["levels"][level][label] = found
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(60)
        result["log_records"] = sum(
            len(p.read_text().splitlines()) for p in Path(logs).rglob("*.jsonl")
        )
    for found in result["levels"].values():
        base = found["in_process"]["per_second"]
        found["server_vs_in_process"] = round(found["server"]["per_second"] / base, 3)
        found["logging_cost"] = round(
            1 - found["server_logging"]["per_second"] / found["server"]["per_second"], 3
        )
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
