"""Shared fixtures: one small synthetic shop, read and trained once per test session.

The shop has planted structure (hidden categories, see ``itemvec.data.synth``): a working model puts
items of the same category next to each other, a broken one does not. Training runs only a
couple of times in the whole suite; tests that need a model reuse ``trained`` / ``bundle_dir``.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from itemvec.config import IngestConfig, PipelineConfig, TrainingConfig
from itemvec.data.frames import events_from_frame
from itemvec.data.ingest import EventLog, read_events
from itemvec.data.synth import SyntheticShop, generate, write
from itemvec.model.features import SideInformation
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.train.pipeline import TrainedModel, save_model, train_on_log

SHOP_EVENTS, SHOP_ITEMS, SHOP_CATEGORIES = 30_000, 400, 10
# Items seen in at least this many contexts have enough data for the neighbour check.
WELL_OBSERVED = 20


@pytest.fixture(scope="session", autouse=True)
def _single_torch_thread():
    """The suite's models are tiny: one thread is faster, and steadier on a shared 2-core box."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shop() -> SyntheticShop:
    return generate(SHOP_EVENTS, SHOP_ITEMS, n_categories=SHOP_CATEGORIES, seed=0)


@pytest.fixture(scope="session")
def shop_files(shop: SyntheticShop, tmp_path_factory) -> tuple[Path, Path]:
    """(events.csv, events_items.csv) of the shared shop."""
    return write(shop, tmp_path_factory.mktemp("shop") / "events.csv")


@pytest.fixture(scope="session")
def shop_config() -> PipelineConfig:
    return PipelineConfig(ingest=IngestConfig(context="session_id", item="item_id", time="ts"),
                          training=TrainingConfig(device="cpu"))


@pytest.fixture(scope="session")
def shop_log(shop_files: tuple[Path, Path], shop_config: PipelineConfig) -> EventLog:
    return read_events(shop_files[0], shop_config.ingest)


@pytest.fixture(scope="session")
def categories(shop: SyntheticShop) -> dict[str, str]:
    return dict(zip(shop.items["item_id"].to_list(), shop.items["category"].to_list(),
                    strict=True))


@pytest.fixture(scope="session")
def trained(shop_log: EventLog, shop_config: PipelineConfig) -> TrainedModel:
    """The default model on the shared shop (trained once per session)."""
    return train_on_log(shop_log, shop_config, progress=False)


@pytest.fixture(scope="session")
def bundle_dir(trained: TrainedModel, shop_config: PipelineConfig, tmp_path_factory) -> Path:
    return save_model(trained, tmp_path_factory.mktemp("bundle") / "model", shop_config)


COLD_PER_WARM = 20  # the planted catalogue: 20 cold items per item seen in behaviour


@pytest.fixture(scope="session")
def cold_catalogue(tmp_path_factory) -> tuple[TrainedModel, Path, dict[str, str]]:
    """(model, bundle, item -> hidden category) of a small planted shop whose item table is
    ``COLD_PER_WARM`` times its active items. Each cold item copies a warm item's category,
    brand and price, so by its features alone it sits on that category: with plain cosine
    cold items crowd the warm neighbours out of a warm item's top 20."""
    shop = generate(16_000, 240, 8, seed=2)
    log = events_from_frame(shop.events, IngestConfig(context="session_id", item="item_id",
                                                      time="ts"), "planted-catalogue")
    warm = shop.items.select("item_id", "category", "brand", "price")
    cold = warm.sample(len(warm) * COLD_PER_WARM, with_replacement=True, seed=3).with_columns(
        pl.format("c{}", pl.int_range(pl.len())).alias("item_id"))
    table = pl.concat([warm, cold]).with_columns(pl.format("product {}", "item_id").alias("title"))
    config = PipelineConfig(ingest=IngestConfig(time="ts"),
                            training=TrainingConfig(device="cpu", epochs=8, dim=32))
    side = SideInformation(table, {"category": "cat", "brand": "cat", "price": "num"})
    model = train_on_log(log, config, item_table=table, side=side, progress=False)
    bundle = save_model(model, tmp_path_factory.mktemp("catalogue") / "model", config)
    return model, bundle, dict(zip(table["item_id"].to_list(), table["category"].to_list(),
                                   strict=True))


def category_purity(embeddings: ItemEmbeddings, categories: dict[str, str],
                    item_counts: np.ndarray, min_count: int = WELL_OBSERVED, n: int = 10) -> float:
    """Mean fraction of each well-observed item's top-``n`` neighbours in its hidden category."""
    ids = [str(i) for i, c in zip(embeddings.item_ids, item_counts, strict=True) if c >= min_count]
    assert len(ids) >= 50, "too few well-observed items for a meaningful check"
    neighbours, _ = embeddings.similar_items_batch(ids, n=n)
    return float(np.mean([np.mean([categories[j] == categories[q] for j in row])
                          for q, row in zip(ids, neighbours, strict=True)]))


@pytest.fixture(scope="session")
def purity() -> Callable[..., float]:
    return category_purity


def run_cli(args: Sequence[str | Path]) -> tuple[int, str, str]:
    """Run ``itemvec.cli.main.main`` in-process: (exit code, stdout, stderr)."""
    from itemvec.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["itemvec", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def cli() -> Callable[[Sequence[str | Path]], tuple[int, str, str]]:
    return run_cli


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write text or bytes to ``tmp_path/name`` and return the path."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return _write



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(bundle: Path, *args: str, log: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A real ``itemvec serve`` on a free loopback port, healthy before it is yielded."""
    script = Path(sys.executable).with_name("itemvec")  # the installed entry point if there is one
    launcher = [str(script)] if script.is_file() else [
        sys.executable, "-c", "from itemvec.cli.main import main; main()"]
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([*launcher, "serve", str(bundle), "--host", "127.0.0.1",
                                    "--port", str(port), *args],
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("itemvec serve did not start: "
                            + log.read_text(errors="replace")[-2000:])
            time.sleep(0.2)
        yield process, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
