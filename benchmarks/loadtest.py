#!/usr/bin/env python3
"""Load test of `fastcodec serve` against the in-process library, on this machine.

    python benchmarks/loadtest.py [FOLDER] [--requests 96] [--concurrency 4] [--overload 4]

Starts the server in a subprocess on a free loopback port, then:
1. in-process baseline: the same images compressed by one shared Codec from `concurrency`
   threads (images/s);
2. server: a bounded asyncio client with `concurrency` connections POSTs the images to
   /v1/compress (requests/s, p50/p99 latency), and the ratio to the baseline;
3. overload: `overload` x more concurrent clients than the server admits; every request must be
   answered (200 or 503), no connection errors; the server's peak RSS is reported.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


async def blast(url, bodies, n, concurrency):
    import httpx
    lat, codes, errors = [], {}, 0
    queue = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(bodies[i % len(bodies)])
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker():
            nonlocal errors
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, content=body, params={"quality": 75})
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code == 200:
                        lat.append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    errors += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return wall, lat, codes, errors


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--requests", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--overload", type=int, default=4)
    args = ap.parse_args(argv)

    import fastcodec
    files = sorted(Path(args.folder).glob("*.png"))
    if not files:
        sys.exit(f"no PNG images in {args.folder}")
    bodies = [f.read_bytes() for f in files]

    codec = fastcodec.Codec(threads=1)
    codec.compress(bodies[0])  # warm up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as ex:
        list(ex.map(lambda i: codec.compress(bodies[i % len(bodies)], quality=75), range(args.requests)))
    lib_rate = args.requests / (time.perf_counter() - t0)

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastcodec", "serve", "--port", str(port),
                             "--concurrency", str(args.concurrency)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        import httpx
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        asyncio.run(blast(url + "/v1/compress", bodies, 2 * args.concurrency, args.concurrency))  # warm up
        wall, lat, codes, errors = asyncio.run(blast(url + "/v1/compress", bodies, args.requests, args.concurrency))
        rate = codes.get(200, 0) / wall
        over_n = args.overload * args.concurrency * 3
        owall, olat, ocodes, oerrors = asyncio.run(
            blast(url + "/v1/compress", bodies, max(over_n * 2, args.requests), over_n))
        peak = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    p = lambda a, q: 1000 * float(np.percentile(a, q)) if a else float("nan")  # noqa: E731
    print("| measurement | value |\n|---|---:|")
    print(f"| in-process library, {args.concurrency} threads | {lib_rate:.2f} images/s |")
    print(f"| server, {args.concurrency} clients | {rate:.2f} requests/s ({100 * rate / lib_rate:.0f}% of library) |")
    print(f"| server latency p50 / p99 | {p(lat, 50):.0f} / {p(lat, 99):.0f} ms |")
    print(f"| overload: {over_n} clients | {ocodes.get(200, 0)} x 200, {ocodes.get(503, 0)} x 503, "
          f"{sum(v for k, v in ocodes.items() if k not in (200, 503))} other, {oerrors} connection errors |")
    print(f"| overload latency of admitted p50 / p99 | {p(olat, 50):.0f} / {p(olat, 99):.0f} ms |")
    print(f"| server peak RSS | {peak:.0f} MiB |")


if __name__ == "__main__":
    main()
