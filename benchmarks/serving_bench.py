"""Serving benchmark: query latency in process (exact vs ANN, 10k-1M items) and HTTP under load.

    python -m benchmarks.serving_bench inprocess --sizes 10000,100000,1000000 --out /tmp/sb.json
    python -m benchmarks.serving_bench http --items 100000 --concurrency 200 --requests 20000
    python -m benchmarks.serving_bench workers --root /tmp/itemvec-bundles --out /tmp/sw.json

In process: synthetic clustered unit vectors (dim 64, a Gaussian mixture, so neighbourhoods are
meaningful), random popularity logits; p50/p99 per call of ``similar_items`` and ``recommend``
(history of 5), one query per call and batches of 64, exact matmul vs an ANN index, plus ANN
recall@10 against exact on 1000 queries.

HTTP: writes a synthetic bundle (ANN index stored in it), starts ``itemvec serve`` on a free
loopback port, then drives it with an httpx async client holding ``--concurrency`` requests in
flight until ``--requests`` are done (bounded: stops by itself). Runs: valid requests only;
a mixed valid/invalid run (must see zero 5xx); a valid run with ``POST /admin/reload`` in the
middle (must lose no request); and a reload storm, the serial run again while
``--reload-loops`` clients in another process post reloads back to back (the server runs with
``--allow-reload`` and its default rate limit, so most of them get 429), and its control, the
same number of clients sending ``GET /health`` back to back. Results go to ``--out`` as JSON
and a table on stdout.

Workers: synthetic bundles (random clustered vectors, IVF index stored) at 100k and 1M items;
``itemvec serve --workers N`` and the ceiling app (``benchmarks.serving_ceiling``, a constant
10-item answer on the same uvicorn settings) for N = 1 and 2, each driven by the load generator
(``benchmarks.loadgen``, its own process) with ``GET /similar`` and ``POST /recommend`` at 50
and 200 in flight; memory (RSS, PSS, private) of every server process after its load. Per worker
count the ceiling and both itemvec servers are up together and every cell alternates between
itemvec and the ceiling (``--rounds``), so the ratio compares the two under the same conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 64


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, n // 500), DIM)).astype(np.float32)
    vectors = centres[rng.integers(len(centres), size=n)]
    vectors += 0.7 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, rng.normal(scale=0.5, size=n).astype(np.float32)


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "calls": len(ms)}


def timed(fn, args_list) -> dict[str, float]:
    fn(args_list[0])  # warm-up
    out = []
    for args in args_list:
        began = time.perf_counter()
        fn(args)
        out.append(time.perf_counter() - began)
    return percentiles(out)


# -- in process ------------------------------------------------------------------------------------
def inprocess(sizes: list[int], backend: str, calls: int, batch: int, seed: int = 0) -> list[dict]:
    from itemvec.query.embeddings import ItemEmbeddings
    from itemvec.query.index import ExactIndex, build_index, recall_at_k

    rows = []
    for n in sizes:
        vectors, bias = synthetic(n, seed)
        ids = [f"i{i}" for i in range(n)]
        exact = ItemEmbeddings(ids, vectors, bias, temperature=0.1)
        began = time.perf_counter()
        index = build_index(backend, vectors)
        build_s = time.perf_counter() - began
        ann = exact.with_query()
        ann.vector_index = index
        rng = np.random.default_rng(seed + 1)
        queries = vectors[rng.choice(n, 1000, replace=False)]
        _, truth = ExactIndex(vectors).search(queries, 10)
        recall = recall_at_k(index, vectors, queries, 10, truth=truth)
        singles = [ids[i] for i in rng.integers(n, size=calls)]
        histories = [[ids[i] for i in rng.integers(n, size=5)] for _ in range(calls)]
        batches = [[ids[i] for i in rng.integers(n, size=batch)] for _ in range(max(5, calls // 20))]
        hist_batches = [[[ids[i] for i in rng.integers(n, size=5)] for _ in range(batch)]
                        for _ in range(max(5, calls // 20))]
        exact_calls = calls if n <= 100_000 else max(50, calls // 5)
        row = {"items": n, "backend": backend, "build_s": round(build_s, 1),
               "params": index.params, "recall@10": round(recall, 4)}
        for label, model, k in (("exact", exact, exact_calls), (backend, ann, calls)):
            row[f"{label}_similar_1"] = timed(lambda q, m=model: m.similar_items(q, n=10),
                                              singles[:k])
            row[f"{label}_similar_{batch}"] = timed(lambda q, m=model: m.similar_items_batch(q, n=10),
                                                    batches[:max(5, k // 20)])
            row[f"{label}_recommend_1"] = timed(lambda h, m=model: m.recommend(h, n=10),
                                                histories[:k])
            row[f"{label}_recommend_{batch}"] = timed(lambda h, m=model: m.recommend_batch(h, n=10),
                                                      hist_batches[:max(5, k // 20)])
        exact_rec, _ = exact.recommend_batch(histories[:200], n=10)
        ann_rec, _ = ann.recommend_batch(histories[:200], n=10)
        row["recommend_agreement@10"] = round(float(np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(exact_rec, ann_rec, strict=True)])), 4)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# -- HTTP ------------------------------------------------------------------------------------------
def write_synthetic_bundle(root: Path, name: str, n: int, backend: str, seed: int = 0) -> Path:
    from itemvec.query.embeddings import ItemEmbeddings
    from itemvec.store.bundle import write_bundle

    vectors, bias = synthetic(n, seed)
    emb = ItemEmbeddings([f"i{i}" for i in range(n)], vectors, bias, temperature=0.1)
    path = write_bundle(root / name, emb, config={}, stats={})
    if backend != "exact":  # the similar index, and from 50k items the recommend index
        ItemEmbeddings.load(path).use_index(backend, bundle=path, save=True)
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: cost per request, independent of machine load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def rss_mib(pid: int) -> float:
    """Resident memory of the server process (Linux /proc), to show it stays flat under load."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


FLOOD = """
import asyncio, json, signal, sys, httpx
base, kind, loops = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts = {}
async def main():
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async def one():
            while not stop.is_set():
                try:
                    r = await (client.get("/health") if kind == "health" else
                               client.post("/admin/reload", json={"path": "current"}))
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                counts[key] = counts.get(key, 0) + 1
        await asyncio.gather(*(one() for _ in range(loops)))
asyncio.run(main())
print(json.dumps(counts))
"""


def stop_server(server: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it outlives ``timeout``."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()


def run_load(server: subprocess.Popen, *args, flood: str | None = None, loops: int = 0) -> dict:
    """One load run; with ``flood`` ("reload" or "health"), ``loops`` clients in another
    process send that request back to back meanwhile (in this process they would starve the
    measured client instead of the server)."""
    flooder = None if flood is None else subprocess.Popen(
        [sys.executable, "-c", FLOOD, args[0], flood, str(loops)], stdout=subprocess.PIPE)
    if flooder is not None:
        time.sleep(2)  # let the flood start
    before, began, memory = cpu_seconds(server.pid), load_average(), rss_mib(server.pid)
    result = asyncio.run(load(*args))
    if flooder is not None:
        flooder.send_signal(signal.SIGTERM)
        result[f"{flood}_flood_statuses"] = json.loads(flooder.communicate(timeout=60)[0])
    used = cpu_seconds(server.pid) - before
    result["server_cpu_ms_per_request"] = round(1000 * used / max(1, result["calls"]), 3)
    result["load_average_1m"] = [began, load_average()]
    result["server_rss_mib"] = [memory, rss_mib(server.pid)]
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def valid_request(rng: random.Random, n_items: int) -> tuple[str, str, dict | None]:
    if rng.random() < 0.5:
        return "GET", f"/similar/i{rng.randrange(n_items)}?n=10", None
    return "POST", "/recommend", {"history": [f"i{rng.randrange(n_items)}" for _ in range(5)],
                                  "n": 10}


INVALID = (
    ("GET", "/similar/no-such-item?n=10", None),  # 404
    ("GET", "/similar/i1?n=0", None),  # 422
    ("POST", "/recommend", {"history": ["i1"] * 5000, "n": 10}),  # 422
    ("POST", "/recommend", b"{not json"),  # 422
    ("POST", "/recommend", b"x" * (2 << 20)),  # 413
    ("POST", "/recommend", {"history": ["i1"], "n": True}),  # 422: strict ints
    ("POST", "/search", b'{"vector": [NaN, 1]}'),  # 422
    ("GET", "/similar/a/b/c?n=3", None),  # 404: ids may hold "/"
    ("POST", "/admin/reload", {"path": "../../etc"}),  # 400 outside the root, or 429
)


def invalid_request(rng: random.Random, n_items: int) -> tuple[str, str, object]:
    return INVALID[rng.randrange(len(INVALID))]


async def load(base: str, n_items: int, concurrency: int, total: int, mix_invalid: float,
               reload_at: int | None, seed: int) -> dict:
    import httpx

    rng = random.Random(seed)
    plan = [invalid_request(rng, n_items) if rng.random() < mix_invalid
            else valid_request(rng, n_items) for _ in range(total)]
    latencies, statuses, errors = [], {}, []
    next_index = 0
    reload_result: dict = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal next_index
            while next_index < total:
                i = next_index
                next_index += 1
                if reload_at is not None and i == reload_at:
                    asyncio.get_running_loop().create_task(do_reload())
                method, path, body = plan[i]
                began = time.perf_counter()
                try:
                    if isinstance(body, bytes):
                        response = await client.request(method, path, content=body, headers={
                            "content-type": "application/json"})
                    else:
                        response = await client.request(method, path, json=body)
                    status = response.status_code
                except httpx.HTTPError as exc:
                    oversize = isinstance(body, bytes) and len(body) > (1 << 20)
                    errors.append(f"{'oversize-body ' if oversize else ''}{exc!r}")
                    continue
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1

        async def do_reload() -> None:
            began = time.perf_counter()
            response = await client.post("/admin/reload", json={"path": "other"})
            while response.status_code == 429:  # rate-limited: wait as told, as a client would
                await asyncio.sleep(float(response.headers.get("retry-after", 1)))
                response = await client.post("/admin/reload", json={"path": "other"})
            reload_result.update(status=response.status_code,
                                 seconds=round(time.perf_counter() - began, 3))

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
        while reload_at is not None and not reload_result:
            await asyncio.sleep(0.05)
    return {"requests": total, "concurrency": concurrency, "wall_s": round(wall, 2),
            "throughput_rps": round(len(latencies) / wall, 1), **percentiles(latencies),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "transport_errors": len(errors), "error_examples": sorted(set(errors))[:3],
            "5xx": sum(v for k, v in statuses.items() if k >= 500),
            **({"reload": reload_result} if reload_at is not None else {})}


def http(n_items: int, backend: str, concurrency: int, total: int,
         reload_loops: int = 60) -> dict:
    import httpx

    root = Path(tempfile.mkdtemp(prefix="itemvec-serving-"))
    write_synthetic_bundle(root, "current", n_items, backend)
    write_synthetic_bundle(root, "other", n_items, backend, seed=1)
    port = free_port()
    script = Path(sys.executable).with_name("itemvec")
    command = [str(script), "serve", str(root / "current"), "--host", "127.0.0.1",
               "--port", str(port), "--index", backend, "--allow-reload"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise SystemExit(server.stderr.read().decode())
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server never became healthy")
            time.sleep(0.25)
        results = {"items": n_items, "backend": backend}
        results["serial"] = run_load(server, base, n_items, 1, min(total, 500), 0.0, None, 3)
        print(json.dumps(results["serial"]), flush=True)
        results["valid"] = run_load(server, base, n_items, concurrency, total, 0.0, None, 0)
        print(json.dumps(results["valid"]), flush=True)
        results["mixed"] = run_load(server, base, n_items, concurrency, total, 0.5, None, 1)
        print(json.dumps(results["mixed"]), flush=True)
        results["reload"] = run_load(server, base, n_items, concurrency, total, 0.0, total // 2, 2)
        print(json.dumps(results["reload"]), flush=True)
        for flood in (None, "reload", "health"):  # serial, back to back; health: the control
            name = f"serial_{flood or 'quiet'}"
            results[name] = run_load(server, base, n_items, 1, min(total, 300), 0.0, None, 3,
                                     flood=flood, loops=reload_loops)
            print(json.dumps({"run": name, **results[name]}), flush=True)
        return results
    finally:
        stop_server(server, timeout=20)


# -- workers: the whole table against the ceiling of the stack ------------------------------------
ENDPOINTS = ("similar", "recommend")  # the load; --endpoints adds recommend_cluster


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def process_memory(pid: int) -> list[dict]:
    """RSS, PSS and private (USS) MiB of a server process and its descendants (smaps_rollup)."""
    rows = []
    for member in [pid, *_children(pid)]:
        fields = {}
        for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0]) / 1024
        command = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        role = ("tracker" if "resource_tracker" in command else "worker" if "spawn_main" in
                command else "parent")
        rows.append({"pid": member, "role": role, "rss_mib": round(fields["Rss"], 1),
                     "pss_mib": round(fields["Pss"], 1),
                     "private_mib": round(fields["Private_Clean"] + fields["Private_Dirty"], 1)})
    return rows


def wait_healthy(server: subprocess.Popen, port: int, timeout: float = 900) -> float:
    import urllib.request

    began = time.monotonic()
    while True:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return round(time.monotonic() - began, 1)
        except OSError:
            pass
        if time.monotonic() - began > timeout:
            raise SystemExit("server never became healthy")
        time.sleep(0.25)


def drive(port: int, endpoint: str, items: int, concurrency: int, seconds: float) -> dict:
    """One cell: the load generator in its own process (``benchmarks.loadgen``)."""
    before = load_average()
    out = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", "--port", str(port),
                          "--endpoint", endpoint, "--items", str(items), "--concurrency",
                          str(concurrency), "--seconds", str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    return {**json.loads(out), "load_average_1m": [before, load_average()]}


def ceiling_command(workers: int, port: int) -> list[str]:
    """The ceiling app (a constant 10-item answer) on itemvec's uvicorn settings."""
    return [sys.executable, "-m", "uvicorn", "benchmarks.serving_ceiling:create", "--factory",
            "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]


def itemvec_command(bundle: Path, workers: int, backend: str, port: int) -> list[str]:
    return [sys.executable, "-m", "itemvec.cli.main", "serve", str(bundle), "--workers",
            str(workers), "--index", backend, "--host", "127.0.0.1", "--port", str(port)]


def start_server(command: list[str], port: int) -> tuple[subprocess.Popen, float]:
    """A server process and its seconds to healthy."""
    # One OpenMP thread per request thread in every server: omp_set_num_threads (what --threads
    # calls) binds only the calling thread, and the request threads would otherwise start FAISS
    # searches with one OpenMP thread per core each (tens of spinning threads on 2 cores).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        return server, wait_healthy(server, port)
    except BaseException:
        stop_server(server, timeout=30)
        raise


def merge_rounds(cells: list[dict]) -> dict:
    """One cell from equal-length rounds: mean throughput, median p50, worst p99, every
    round's throughput kept (``rounds_rps``) to show how much the box drifted."""
    statuses: dict[str, int] = {}
    for cell in cells:
        for code, count in cell["statuses"].items():
            statuses[code] = statuses.get(code, 0) + count
    return {**{k: v for k, v in cells[0].items() if k not in ("requests", "statuses")},
            "requests": sum(c["requests"] for c in cells), "statuses": statuses,
            "throughput_rps": round(float(np.mean([c["throughput_rps"] for c in cells])), 1),
            "p50_ms": round(float(np.median([c["p50_ms"] for c in cells])), 2),
            "p99_ms": max(c["p99_ms"] for c in cells),
            "client_cores": round(float(np.mean([c["client_cores"] for c in cells])), 2),
            "load_average_1m": [cells[0]["load_average_1m"][0], cells[-1]["load_average_1m"][-1]],
            "rounds_rps": [c["throughput_rps"] for c in cells]}


def paired_cell(ports: tuple[int, int], endpoint: str, items: int, concurrency: int,
                seconds: float, rounds: int) -> tuple[dict, dict]:
    """(itemvec, ceiling) for one cell, measured in alternating rounds of ``seconds / rounds``:
    both servers are up, and only the driven one works, so a drift of the box's speed during
    the run reaches both sides of the ratio alike."""
    mine, theirs = [], []
    for _ in range(rounds):  # the ceiling answers a clustered history as it answers any other
        theirs.append(drive(ports[1], endpoint.replace("_cluster", ""), items, concurrency,
                            seconds / rounds))
        mine.append(drive(ports[0], endpoint, items, concurrency, seconds / rounds))
    return merge_rounds(mine), merge_rounds(theirs)


def workers_bench(sizes: list[int], workers: list[int], concurrencies: list[int],
                  seconds: float, backend: str, root: Path | None,
                  endpoints: tuple[str, ...] = ENDPOINTS, rounds: int = 2) -> dict:
    """itemvec and the ceiling app, every (items, workers, endpoint, concurrency) cell; per
    worker count the ceiling and one itemvec server per size run side by side, and each cell
    alternates between itemvec and the ceiling (``paired_cell``)."""
    root = root or Path(tempfile.mkdtemp(prefix="itemvec-serving-"))
    root.mkdir(parents=True, exist_ok=True)
    result: dict = {"cores": os.cpu_count(), "backend": backend, "seconds": seconds,
                    "rounds": rounds, "itemvec": [], "ceiling": [], "servers": []}
    for n in sizes:
        if not (root / f"items-{n}" / "manifest.json").is_file():
            began = time.perf_counter()
            write_synthetic_bundle(root, f"items-{n}", n, backend)
            print(f"built items-{n} in {time.perf_counter() - began:.0f}s", flush=True)
    for count in workers:
        servers: dict = {}
        try:
            port = free_port()
            servers["ceiling"] = (port, *start_server(ceiling_command(count, port), port))
            for n in sizes:
                port = free_port()
                servers[n] = (port, *start_server(
                    itemvec_command(root / f"items-{n}", count, backend, port), port))
            for concurrency in concurrencies:
                for n in sizes:
                    for endpoint in endpoints:
                        mine, theirs = paired_cell((servers[n][0], servers["ceiling"][0]),
                                                   endpoint, n, concurrency, seconds, rounds)
                        print(json.dumps({"items": n, "workers": count, "itemvec": mine,
                                          "ceiling": theirs}), flush=True)
                        result["itemvec"].append({"items": n, "workers": count, **mine})
                        result["ceiling"].append({"items": n, "workers": count, **theirs,
                                                  "endpoint": endpoint})
            for key, (_, server, startup) in servers.items():
                result["servers"].append({"app": "ceiling" if key == "ceiling" else "itemvec",
                                          **({} if key == "ceiling" else {"items": key}),
                                          "workers": count, "startup_s": startup,
                                          "memory": process_memory(server.pid)})
        finally:
            for _, server, _ in servers.values():
                stop_server(server, timeout=30)
    print(workers_table(result))
    return result


def connection_split(items: int, workers: int, root: Path, repeats: int = 3) -> dict:
    """How the load generator's keep-alive connections land on the worker processes (``ss``),
    for the ceiling and for itemvec: a shared listening socket lets the kernel hand a burst of
    new connections to whichever process accepts first."""
    import collections
    import re

    out: dict = {}
    for name in ("ceiling", "itemvec"):
        port = free_port()
        server, _ = start_server(ceiling_command(workers, port) if name == "ceiling" else
                                 itemvec_command(root / f"items-{items}", workers, "ivf", port),
                                 port)
        try:
            out[name] = []
            for _ in range(repeats):
                load = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen", "--port",
                                         str(port), "--items", str(items), "--concurrency", "50",
                                         "--seconds", "2"], stdout=subprocess.DEVNULL)
                time.sleep(1.5)
                listed = subprocess.run(["ss", "-tnpH", "state", "established",
                                         f"( sport = :{port} )"], capture_output=True,
                                        text=True).stdout
                load.wait()
                split = collections.Counter(re.findall(r"pid=(\d+)", listed))
                out[name].append(sorted(split.values(), reverse=True))
            print(name, "connections per process:", out[name], flush=True)
        finally:
            stop_server(server, timeout=30)
    return out


def workers_table(result: dict) -> str:
    """The markdown table of ``workers_bench``: itemvec beside the ceiling, cell by cell."""
    ceiling = {(c.get("items"), c["workers"], c["endpoint"], c["concurrency"]): c
               for c in result["ceiling"]}
    lines = ["| items | workers | endpoint | in flight | itemvec rps | p50 ms | p99 ms | "
             "ceiling rps | p50 ms | p99 ms | itemvec / ceiling | client cores |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in result["itemvec"]:
        # the ceiling answers a clustered history as it answers any other (its own rounds,
        # beside this cell's, since --rounds; before, one ceiling cell for every size)
        top = ceiling.get((c["items"], c["workers"], c["endpoint"], c["concurrency"])) or \
            ceiling[(None, c["workers"], c["endpoint"].replace("_cluster", ""), c["concurrency"])]
        method = {"similar": "GET /similar", "recommend": "POST /recommend",
                  "recommend_cluster": "POST /recommend (one-cluster histories)"}[c["endpoint"]]
        lines.append(f"| {c['items']:,} | {c['workers']} | {method} | {c['concurrency']} | "
                     f"{c['throughput_rps']:.0f} | {c['p50_ms']} | {c['p99_ms']} | "
                     f"{top['throughput_rps']:.0f} | {top['p50_ms']} | {top['p99_ms']} | "
                     f"{c['throughput_rps'] / top['throughput_rps']:.2f} | "
                     f"{c['client_cores']} |")
    lines += ["", "| server | items | workers | startup s | process | RSS MiB | PSS MiB | "
              "private MiB |", "|---|---|---|---|---|---|---|---|"]
    for server in result["servers"]:
        for m in server.get("memory", []):
            lines.append(f"| {server['app']} | {server.get('items', '')} | {server['workers']} | "
                         f"{server['startup_s']} | {m['role']} {m['pid']} | {m['rss_mib']} | "
                         f"{m['pss_mib']} | {m['private_mib']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("inprocess")
    one.add_argument("--sizes", default="10000,100000,1000000")
    one.add_argument("--backend", default="hnsw")
    one.add_argument("--calls", type=int, default=500)
    one.add_argument("--batch", type=int, default=64)
    one.add_argument("--out", type=Path)
    two = sub.add_parser("http")
    two.add_argument("--items", type=int, default=100_000)
    two.add_argument("--backend", default="hnsw")
    two.add_argument("--concurrency", type=int, default=200)
    two.add_argument("--requests", type=int, default=20_000)
    two.add_argument("--reload-loops", type=int, default=60,
                     help="clients posting reloads back to back in the storm run")
    two.add_argument("--out", type=Path)
    three = sub.add_parser("workers", help="the whole table: itemvec and the ceiling app, "
                           "1 and 2 workers, 100k and 1M items, 50 and 200 in flight")
    three.add_argument("--sizes", default="100000,1000000")
    three.add_argument("--workers", default="1,2")
    three.add_argument("--concurrency", default="50,200")
    three.add_argument("--seconds", type=float, default=8.0)
    three.add_argument("--backend", default="ivf")
    three.add_argument("--root", type=Path, help="keep (and reuse) the synthetic bundles here")
    three.add_argument("--endpoints", default=",".join(ENDPOINTS),
                       help="similar, recommend (5 random items) and recommend_cluster (5 "
                       "items of one cluster: a separate, labelled row)")
    three.add_argument("--rounds", type=int, default=2,
                       help="alternate itemvec and the ceiling this many times per cell")
    three.add_argument("--out", type=Path)
    four = sub.add_parser("connections", help="how 50 keep-alive connections split over "
                          "the worker processes (ceiling and itemvec)")
    four.add_argument("--items", type=int, default=100_000)
    four.add_argument("--workers", type=int, default=2)
    four.add_argument("--root", type=Path, required=True, help="bundles of the workers command")
    four.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS/OpenMP threads (1, like itemvec serve's default)")
    args = parser.parse_args()
    from itemvec.serve.state import limit_threads

    limit_threads(args.threads)
    if args.mode == "workers":
        result = workers_bench([int(x) for x in args.sizes.split(",")],
                               [int(x) for x in args.workers.split(",")],
                               [int(x) for x in args.concurrency.split(",")], args.seconds,
                               args.backend, args.root, tuple(args.endpoints.split(",")),
                               args.rounds)
    elif args.mode == "connections":
        result = connection_split(args.items, args.workers, args.root)
    elif args.mode == "inprocess":
        result = inprocess([int(s) for s in args.sizes.split(",")], args.backend, args.calls,
                           args.batch)
    else:
        result = http(args.items, args.backend, args.concurrency, args.requests,
                      args.reload_loops)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
