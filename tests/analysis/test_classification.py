"""A linear probe on the embeddings recovers the hidden categories from a few labels."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from itemvec.analysis.classification import classify, read_labels
from itemvec.util.errors import DataError


@pytest.fixture(scope="module")
def labels(shop) -> pl.DataFrame:
    frame = shop.items.select("item_id", pl.col("category").alias("label"))
    return frame.sample(fraction=0.3, seed=0)


def test_probe_predicts_hidden_categories_of_unlabelled_items(trained, labels, categories):
    frame, report = classify(trained.embeddings, labels)
    assert frame.height == len(trained.embeddings)
    predicted = frame.filter(pl.col("source") == "predicted")
    accuracy = np.mean([categories[i] == lab for i, lab in predicted.select("item_id", "label")
                        .iter_rows()])
    assert accuracy >= 0.9
    assert report["cv_accuracy"] >= 0.9 > report["majority_baseline"]
    given = frame.filter(pl.col("source") == "given")
    assert given["confidence"].min() == 1.0 and given.height == report["labelled"]
    assert 0 < predicted["confidence"].min() <= predicted["confidence"].max() <= 1


def test_one_class_is_not_enough(trained, labels):
    with pytest.raises(DataError, match="at least 2 classes"):
        classify(trained.embeddings, labels.with_columns(pl.lit("x").alias("label")))


def test_cli_writes_predictions_by_extension(cli, bundle_dir, labels, tmp_path, categories):
    path = tmp_path / "labels.csv"
    labels.rename({"item_id": "sku", "label": "cat"}).write_csv(path)
    out = tmp_path / "pred.parquet"
    code, stdout, err = cli(["classify", bundle_dir, "--labels", path, "--out", out,
                             "--item-key", "sku", "--label-column", "cat"])
    assert code == 0, err
    assert "held-out accuracy" in stdout
    frame = pl.read_parquet(out)
    assert frame.columns == ["item_id", "label", "confidence", "source"]
    code, _, err = cli(["classify", bundle_dir, "--labels", path, "--out", tmp_path / "p.txt",
                        "--item-key", "sku", "--label-column", "cat"])
    assert code == 2 and "unknown extension" in err


def test_label_file_errors_name_the_problem(tmp_path, bundle_dir, cli):
    path = tmp_path / "labels.csv"
    path.write_text("item_id,label\ni1,a\ni2,\n")
    with pytest.raises(DataError, match="row 3"):
        read_labels(path)
    code, _, err = cli(["classify", bundle_dir, "--labels", path, "--out", tmp_path / "o.csv",
                        "--label-column", "kind"])
    assert code == 2 and "kind" in err


def test_cli_refuses_to_write_predictions_into_a_bundle(cli, bundle_dir, labels, tmp_path):
    path = tmp_path / "labels.csv"
    labels.write_csv(path)
    before = sorted(p.name for p in bundle_dir.iterdir())
    code, _, err = cli(["classify", bundle_dir, "--labels", path, "--out",
                        bundle_dir / "pred.csv"])
    assert code == 2 and "inside the model bundle" in err
    assert sorted(p.name for p in bundle_dir.iterdir()) == before
