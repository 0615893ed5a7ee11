"""The Spark job must give the local engine's matrix on real data (local[2])."""

import os
from pathlib import Path

import numpy as np
import pytest

from itemvec.config import CooccurrenceConfig, IngestConfig
from itemvec.counting.streamed import count_file

pytest.importorskip("pyspark")
DATA = Path(__file__).parents[2].parent / "shared" / "data"
DIGINETICA = DATA / "diginetica" / "sample_train-item-views.csv"
GROCERIES = DATA / "groceries" / "groceries_transactions.csv"
pytestmark = pytest.mark.skipif(not DIGINETICA.is_file() or not GROCERIES.is_file(),
                                reason="../shared/data is absent")


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from itemvec.counting.spark import session

    try:
        spark = session("local[2]")
    except Exception as exc:  # no JVM on this machine
        pytest.skip(f"cannot start Spark: {exc}")
    yield spark
    spark.stop()


@pytest.mark.parametrize("path,ingest,config", [
    (DIGINETICA, IngestConfig(context="session_id", item="item_id", time="timeframe",
                              session_gap=100_000),
     CooccurrenceConfig(min_count=2, time_decay_half_life=300_000)),
    (GROCERIES, IngestConfig(context="basket_id", item="item"), CooccurrenceConfig()),
])
def test_spark_equals_local_engine(spark, path, ingest, config):
    from itemvec.counting.spark import count_spark

    local = count_file(path, ingest, config, progress=False)
    remote = count_spark(path, ingest, config, spark=spark)
    assert list(remote.item_ids) == list(local.item_ids)
    assert np.array_equal(remote.item_counts, local.item_counts)
    assert remote.matrix.nnz == local.matrix.nnz
    assert abs(remote.matrix - local.matrix).max() <= 1e-5 * abs(local.matrix).max()
