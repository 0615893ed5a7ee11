"""A lean HTTP/1.1 load generator (asyncio + uvloop over raw keep-alive sockets), run as its own
process so its CPU is apart from the server's and can be reported:

    python -m benchmarks.loadgen --port 8000 --endpoint similar --concurrency 50 --seconds 8 \
        --items 100000

``--concurrency`` connections each keep one request in flight; requests start for
``--warmup`` seconds (not counted), then for ``--seconds``; one JSON line goes to stdout:
throughput, p50/p99 latency, statuses and the client's own CPU use (cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time

import numpy as np


def cluster_members(items: int, seed: int = 0) -> list[np.ndarray]:
    """Items of each cluster of ``serving_bench.synthetic(items, seed)`` (the same two draws
    that place its items, without building the vectors)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, items // 500), 64))
    labels = rng.integers(len(centres), size=items)
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(np.bincount(labels, minlength=len(centres)))[:-1])


def request_bytes(endpoint: str, items: int, rng: random.Random,
                  clusters: list[np.ndarray] | None = None) -> bytes:
    """One request: ``similar`` a random item; ``recommend`` a history of 5 random items;
    ``recommend_cluster`` 5 items of one random cluster (a session that stays on a theme)."""
    if endpoint == "similar":
        return (f"GET /similar/i{rng.randrange(items)}?n=10 HTTP/1.1\r\nHost: b\r\n\r\n"
                ).encode()
    if endpoint == "recommend_cluster":
        members = clusters[rng.randrange(len(clusters))]
        history = [f"i{members[rng.randrange(len(members))]}" for _ in range(5)]
    else:
        history = [f"i{rng.randrange(items)}" for _ in range(5)]
    body = json.dumps({"history": history, "n": 10})
    return (f"POST /recommend HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


async def connection(port: int, plan: list[bytes], start: int, until: float, counted: float,
                     latencies: list[float], statuses: dict[int, int], delay: float = 0.0
                     ) -> None:
    await asyncio.sleep(delay)  # clients arrive over time, not in one burst
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = start
    try:
        while (began := time.perf_counter()) < until:
            writer.write(plan[i % len(plan)])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if began >= counted:
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(port: int, endpoint: str, items: int, concurrency: int, seconds: float,
              warmup: float, seed: int) -> dict:
    rng = random.Random(seed)
    clusters = cluster_members(items) if endpoint == "recommend_cluster" else None
    plan = [request_bytes(endpoint, items, rng, clusters) for _ in range(4096)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    now = time.perf_counter()
    counted, until = now + warmup, now + warmup + seconds
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    # Connections open one by one over the first half of the warm-up: opened in one burst
    # against workers sharing a listening socket, the kernel hands them out unevenly (50/0 and
    # 36/14 between two workers were seen), and an idle worker then measures nothing.
    spread = warmup / 2 / max(concurrency, 1)
    await asyncio.gather(*(connection(port, plan, 97 * c, until, counted, latencies, statuses,
                                      c * spread) for c in range(concurrency)))
    wall = time.perf_counter() - counted
    used = resource.getrusage(resource.RUSAGE_SELF)
    cores = (used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime) / (wall + warmup)
    ms = np.asarray(latencies) * 1000
    return {"endpoint": endpoint, "concurrency": concurrency, "requests": len(ms),
            "throughput_rps": round(len(ms) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "client_cores": round(cores, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--endpoint", choices=("similar", "recommend", "recommend_cluster"),
                        default="similar")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print(json.dumps(asyncio.run(run(args.port, args.endpoint, args.items, args.concurrency,
                                     args.seconds, args.warmup, args.seed))))


if __name__ == "__main__":
    main()
