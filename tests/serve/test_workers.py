"""Several worker processes sharing one memory-mapped bundle: a real ``itemvec serve --workers
2``, reload across workers (POST, SIGHUP and --watch), and loading from read-only, mapped
files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import running_server  # noqa: E402

from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.serve.state import load_model  # noqa: E402
from itemvec.store.bundle import write_bundle  # noqa: E402


def _bundle(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    counts = sp.random(n, n, density=0.05, format="csr", dtype=np.float32, random_state=seed)
    counts = (counts + counts.T).tocsr()
    emb = ItemEmbeddings([f"i{i}" for i in range(n)], vectors, rng.normal(size=n), 0.1)
    return write_bundle(path, emb, config={}, stats={}, cooccurrence=counts)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    _bundle(root / "current", 300, 0)
    _bundle(root / "other", 60, 1)
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o444)
    return root


def _health_by_worker(base: str, want: int, predicate=lambda h: True, timeout: float = 30
                      ) -> dict[int, dict]:
    """/health answers keyed by worker pid until ``want`` workers answered ``predicate``."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want:
        assert time.monotonic() < deadline, f"only {sorted(seen)} answered as wanted"
        answer = httpx.get(f"{base}/health").json()  # a new connection each time
        if predicate(answer):
            seen[answer["worker"]] = answer
        else:
            seen.pop(answer["worker"], None)
    return seen


def _mapped_from(array: np.ndarray) -> str | None:
    """The file this process maps ``array``'s memory from (/proc/self/maps), if any."""
    address = array.ctypes.data
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end and len(fields) == 6 and fields[5].startswith("/"):
            return fields[5]
    return None


def test_mapped_load_shares_the_bundle_files_and_answers_as_a_copy(models, tmp_path):
    bundle = models / "current"
    files = sorted(p.name for p in bundle.iterdir())
    mapped = load_model(bundle, "exact", mmap=True, mapped_cache=tmp_path / "cache")
    copied = load_model(bundle, "exact")
    emb = mapped.embeddings
    for array in (emb.vectors, emb.item_bias, emb.item_ids, mapped.explainer.cooccurrence.data,
                  mapped.explainer.cooccurrence.indices):
        assert _mapped_from(array).startswith((str(bundle), str(tmp_path / "cache")))
        assert not array.flags.writeable
    assert emb.row("i299") == 299 and "i300" not in emb
    assert np.array_equal(mapped.explainer.cooccurrence.toarray(),
                          copied.explainer.cooccurrence.toarray())
    for item in ("i0", "i7", "i299"):
        ids, scores = emb.similar_items(item, n=5)
        want_ids, want_scores = copied.embeddings.similar_items(item, n=5)
        assert list(ids) == list(want_ids) and np.allclose(scores, want_scores)
    assert (mapped.explainer.explain(["i1", "i2"], "i3")
            == copied.explainer.explain(["i1", "i2"], "i3"))
    assert sorted(p.name for p in bundle.iterdir()) == files  # nothing written to the bundle


def test_two_workers_serve_every_endpoint_and_reload_together(models, tmp_path):
    with running_server(models / "current", "--workers", "2", "--index", "exact", "--watch",
                        "--allow-reload", "--reload-interval", "0.1",
                        "--watch-interval", "0.5", log=tmp_path / "serve.log") as (process, base):
        first = _health_by_worker(base, 2)
        assert {h["items"] for h in first.values()} == {300}
        assert {h["generation"] for h in first.values()} == {0}
        assert len({h["version"] for h in first.values()}) == 1
        similar = httpx.get(f"{base}/similar/i5", params={"n": 10}).json()
        assert len(similar["items"]) == 10 and "i5" not in similar["items"]
        assert httpx.get(f"{base}/similar/nope").status_code == 404
        rec = httpx.post(f"{base}/recommend", json={"history": ["x", "i5"], "n": 4}).json()
        assert len(rec["items"]) == 4 and rec["skipped"] == 1
        explained = httpx.post(f"{base}/explain", json={"history": ["i1"], "item": "i2"}).json()
        assert explained["history"][0]["item_id"] == "i1" and "count" in explained["history"][0]
        assert httpx.get(f"{base}/").status_code == 200  # the explorer
        info = httpx.get(f"{base}/info").json()
        assert info["items"] == 300 and info["worker"] in first

        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=base) as client:
                while not stop.is_set():
                    statuses.append(client.get("/similar/i5", params={"n": 3}).status_code)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            reloaded = httpx.post(f"{base}/admin/reload", json={"path": "other"}, timeout=30)
            assert reloaded.status_code == 200 and reloaded.json()["items"] == 60
            after = _health_by_worker(base, 2, lambda h: h["items"] == 60)
            assert {h["generation"] for h in after.values()} == {1}
            assert {h["version"] for h in after.values()}.isdisjoint(
                {h["version"] for h in first.values()})
            process.send_signal(signal.SIGHUP)  # the supervisor: every worker reloads in place
            hup = _health_by_worker(base, 2, lambda h: h["generation"] == 2)
            assert {h["items"] for h in hup.values()} == {60}
            assert set(hup) == set(after)  # reloaded in place, not restarted
            _bundle(models / "other", 60, 2)  # --watch: a new bundle renamed over the served one
            watched = _health_by_worker(base, 2, lambda h: h["generation"] == 3)
            assert {h["version"] for h in watched.values()}.isdisjoint(
                {h["version"] for h in hup.values()})
        finally:
            stop.set()
            thread.join()
        assert statuses and set(statuses) == {200}
        assert os.path.isdir(models / "current")


def test_a_worker_imports_no_sklearn(models, tmp_path):
    """A worker's app, with its model loaded and queries answered, leaves out scikit-learn (and
    the pandas it loads): ~74 MiB of every worker was search's spelling fallback."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import itemvec.serve.workers\n"
        "from itemvec.serve.http import create_app\n"
        "from itemvec.serve.state import ModelHolder, load_model\n"
        f"model = load_model(Path({str(models / 'current')!r}), 'exact', mmap=True, "
        f"mapped_cache=Path({str(tmp_path / 'cache')!r}))\n"
        "model.embeddings.similar_items('i1', n=5)\n"
        "model.embeddings.recommend(['i1', 'i2'], n=5)\n"
        f"create_app(ModelHolder(Path({str(models / 'current')!r})))  # the explorer too\n"
        "print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
