"""Two gloo processes must train what one process trains (within tolerance), identically."""

import os
import socket

import numpy as np
import pytest
import torch.multiprocessing as mp

from itemvec.config import CooccurrenceConfig, IngestConfig, TrainingConfig
from itemvec.counting.cooccurrence import count_pairs
from itemvec.data.ingest import build_log
from itemvec.data.synth import generate
from itemvec.train.trainer import Trainer

CONFIG = dict(objective="softmax", epochs=3, batch_size=64, device="cpu", threads=1, seed=0)


def planted():
    shop = generate(n_events=20_000, n_items=150, n_categories=6, seed=4)
    table = shop.events.select(context="session_id", item="item_id", time="ts").with_columns(
        weight=1.0).with_row_index("__row")
    log = build_log(table, IngestConfig(time="ts"))
    category = dict(shop.items.select("item_id", "category").iter_rows())
    return count_pairs(log, CooccurrenceConfig()), np.array([category[i] for i in log.item_ids])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from itemvec.train.distributed import DistributedTrainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        matrix, _ = planted()
        result = DistributedTrainer(TrainingConfig(**CONFIG), progress=False).fit(matrix)
        vectors, _ = result.encoder.export()
        np.save(os.path.join(out, f"rank{rank}.npy"), vectors)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
    matrix, category = planted()
    single = Trainer(TrainingConfig(**CONFIG), progress=False).fit(matrix)
    reference, _ = single.encoder.export()
    try:
        mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    except Exception as exc:  # e.g. no loopback networking in a sandbox
        pytest.skip(f"cannot run two gloo processes here: {exc}")
    rank0, rank1 = (np.load(tmp_path / f"rank{r}.npy") for r in (0, 1))
    assert np.array_equal(rank0, rank1)  # gradients were averaged: replicas never diverge
    cosine = (rank0 * reference).sum(axis=1)
    assert cosine.mean() > 0.97, cosine.mean()
    assert np.abs(rank0 - reference).max() < 0.5
    # and it learned the planted structure: nearest neighbours share the hidden category
    sims = rank0 @ rank0.T
    np.fill_diagonal(sims, -np.inf)
    assert (category[sims.argmax(axis=1)] == category).mean() > 0.8
