"""Server memory over many reloads: does a replaced model get freed?

    python -m benchmarks.reload_memory --items 20000 --reloads 150

Writes two synthetic bundles, starts ``itemvec serve --allow-reload --reload-interval 0`` on a
free loopback port, posts ``--reloads`` reloads one after another (alternating bundles, so each
one swaps the model) and prints the server's RSS every 25 reloads. Flat RSS means every replaced
model is freed; with a leak it grows by up to a model per reload.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving_bench import free_port, rss_mib, write_synthetic_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--reloads", type=int, default=150)
    args = parser.parse_args()
    import httpx

    root = Path(tempfile.mkdtemp(prefix="itemvec-reloads-"))
    for seed, name in enumerate(("current", "other")):
        write_synthetic_bundle(root, name, args.items, "exact", seed=seed)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "itemvec.cli.main", "serve",
                               str(root / "current"), "--port", str(port), "--index", "exact",
                               "--allow-reload", "--reload-interval", "0"],
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        rows = [{"reloads": 0, "rss_mib": rss_mib(server.pid)}]
        print(json.dumps(rows[0]), flush=True)
        with httpx.Client(base_url=base, timeout=120) as client:
            for i in range(1, args.reloads + 1):
                response = client.post("/admin/reload",
                                       json={"path": "other" if i % 2 else "current"})
                response.raise_for_status()
                if i % 25 == 0 or i == args.reloads:
                    rows.append({"reloads": i, "rss_mib": rss_mib(server.pid)})
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
