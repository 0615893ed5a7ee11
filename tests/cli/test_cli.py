"""The ``itemvec`` command line end to end: train, export, similar, recommend, evaluate, demo.

Most commands run in-process through ``itemvec.cli.main.main`` (the function behind the console
script, which turns user errors into one line and exit code 2); a few run the installed
``itemvec`` entry point in a subprocess to check the real thing prints no traceback.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import itemvec
import itemvec.store.bundle as bundle
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.store.bundle import write_bundle


def entry_point() -> list[str]:
    script = Path(sys.executable).with_name("itemvec")
    return [str(script)] if script.exists() else [sys.executable, "-m", "itemvec.cli.main"]


def run_entry_point(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([*entry_point(), *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def cli_model(shop_files, tmp_path_factory, cli) -> Path:
    """``itemvec train`` on the shared shop CSV with --time and --items."""
    events, items = shop_files
    out = tmp_path_factory.mktemp("cli") / "model"
    code, stdout, stderr = cli(["train", events, "--time", "ts", "--items", items, "--out", out,
                                "--epochs", "4", "--device", "cpu", "-q"])
    assert code == 0, stderr
    assert "trained" in stdout and str(out) in stdout
    return out


def test_train_stores_config_and_item_table(cli_model):
    embeddings = load_embeddings(cli_model)
    assert embeddings.metadata["config"]["ingest"]["time"] == "ts"
    assert embeddings.metadata["config"]["training"]["epochs"] == 4
    assert "category" in embeddings.item_table.columns


def test_history_fine_tuning_is_reported_and_can_be_turned_off(cli_model, shop_files,
                                                               tmp_path, cli):
    report = load_embeddings(cli_model).metadata["stats"]["history_finetune"]
    assert report["examples"] > 0 and report["best"] >= report["start"]
    assert report["epochs_run"] >= 1 and report["history"][0]["epoch"] == 1  # >= the probe
    out = tmp_path / "off"
    code, _, stderr = cli(["train", shop_files[0], "--time", "ts", "--out", out, "--epochs", "2",
                           "--history-epochs", "0", "--device", "cpu", "-q"])
    assert code == 0, stderr
    embeddings = load_embeddings(out)
    assert embeddings.metadata["config"]["training"]["history_epochs"] == 0
    assert "history_finetune" not in embeddings.metadata["stats"]


def test_export_parquet_has_string_ids_and_float32_lists(cli_model, tmp_path, cli):
    out = tmp_path / "vectors.parquet"
    code, stdout, stderr = cli(["export", cli_model, "--out", out])
    assert code == 0, stderr
    frame = pl.read_parquet(out)
    assert frame.schema == {"item_id": pl.String, "embedding": pl.List(pl.Float32)}
    embeddings = load_embeddings(cli_model)
    assert frame["item_id"].to_list() == embeddings.item_ids.tolist()
    np.testing.assert_array_equal(np.array(frame["embedding"].to_list(), dtype=np.float32),
                                  embeddings.vectors)
    code, _, _ = cli(["export", cli_model, "--out", tmp_path / "vectors.jsonl"])
    assert code == 0
    first = json.loads((tmp_path / "vectors.jsonl").read_text().splitlines()[0])
    assert first["item_id"] == embeddings.item_ids[0] and len(first["embedding"]) == 64
    code, _, stderr = cli(["export", cli_model, "--out", tmp_path / "vectors.xlsx"])
    assert_one_line_error(code, stderr, "unknown extension", ".parquet, .jsonl, .csv or .npy",
                          "word2vec-binary")


def test_export_npy_and_word2vec(cli_model, tmp_path, cli):
    embeddings = load_embeddings(cli_model)
    code, stdout, stderr = cli(["export", cli_model, "--out", tmp_path / "emb.npy"])
    assert code == 0, stderr
    assert "emb.ids.txt" in stdout
    np.testing.assert_array_equal(np.load(tmp_path / "emb.npy"), embeddings.vectors)
    assert (tmp_path / "emb.ids.txt").read_text().split() == embeddings.item_ids.tolist()
    code, _, stderr = cli(["export", cli_model, "--out", tmp_path / "emb.txt",
                           "--format", "word2vec"])
    assert code == 0, stderr
    lines = (tmp_path / "emb.txt").read_text().splitlines()
    assert lines[0] == f"{len(embeddings)} {embeddings.dim}"
    assert lines[1].split(" ")[0] == embeddings.item_ids[0]
    code, _, stderr = cli(["export", cli_model, "--out", tmp_path / "emb.bin",
                           "--format", "word2vec-binary"])
    assert code == 0, stderr
    gensim_models = pytest.importorskip("gensim.models")
    loaded = gensim_models.KeyedVectors.load_word2vec_format(str(tmp_path / "emb.bin"),
                                                             binary=True)
    np.testing.assert_allclose(loaded[embeddings.item_ids[3]], embeddings.vectors[3])


def test_explain_names_unknown_history(cli_model, cli):
    code, _, stderr = cli(["explain", cli_model, "--history", "nope1,nope2"])
    assert_one_line_error(code, stderr, "--history", "nope1, nope2")
    code, _, stderr = cli(["explain", cli_model, "--history", " , "])
    assert_one_line_error(code, stderr, "--history: no item ids given")
    code, stdout, stderr = cli(["explain", cli_model, "--history", "i1,nope1", "-n", "2"])
    assert code == 0, stderr
    assert "nope1" in stderr
    results = json.loads(stdout)
    assert len(results) == 2 and results[0]["skipped"] == 1
    assert results[0]["label"] and results[0]["history"][0]["label"]  # titles beside ids


def test_recommend_history_with_no_known_item_gets_no_popularity(cli_model, tmp_path, cli):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": 1, "history": ["i1"]}\n{"id": 2, "history": ["nope"]}\n')
    out = tmp_path / "r.jsonl"
    code, _, stderr = cli(["recommend", cli_model, "--queries", queries, "--out", out, "-q"])
    assert code == 0, stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows[0]["items"]) == 20 and rows[1]["items"] == [] == rows[1]["scores"]
    assert "1 queries had no known history item" in stderr and "ids 2)" in stderr
    queries.write_text('{"id": 2, "history": ["nope", "nope2"]}\n{"id": 3, "history": []}\n')
    code, _, stderr = cli(["recommend", cli_model, "--queries", queries,
                           "--out", tmp_path / "none.jsonl", "-q"])
    assert_one_line_error(code, stderr, "no history item of any query is in the model",
                          "nope, nope2")
    assert not (tmp_path / "none.jsonl").exists()


def test_similar_json_and_table(cli_model, categories, shop, cli):
    titles = dict(zip(shop.items["item_id"].to_list(), shop.items["title"].to_list(),
                      strict=True))
    item = str(load_embeddings(cli_model).item_ids[0])
    code, stdout, stderr = cli(["similar", cli_model, item, "-n", "5", "--json"])
    assert code == 0, stderr
    answer = json.loads(stdout)
    assert answer["item_id"] == item and len(answer["items"]) == 5
    assert item not in answer["items"]
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    assert sum(categories[i] == categories[item] for i in answer["items"]) >= 4
    assert answer["labels"] == [titles[i] for i in answer["items"]]  # the title column
    code, stdout, _ = cli(["similar", cli_model, item, "-n", "3"])
    assert code == 0 and titles[answer["items"][0]] in stdout
    assert titles[item] in stdout.splitlines()[0]  # the title line names the item too
    code, stdout, _ = cli(["similar", cli_model, item, "-n", "2", "--json", "--label", "none"])
    assert "labels" not in json.loads(stdout)
    code, stdout, _ = cli(["similar", cli_model, item, "-n", "2", "--json", "--label", "brand"])
    assert len(json.loads(stdout)["labels"]) == 2
    code, _, stderr = cli(["similar", cli_model, item, "--label", "colour"])
    assert_one_line_error(code, stderr, "--label 'colour'", "known:", "title")


def test_similar_cold_option_and_marker(cold_catalogue, cli):
    """Planted catalogue (tests/conftest.py): 20 cold items per warm one on its category."""
    model, bundle, _ = cold_catalogue
    item = str(model.embeddings.item_ids[0])
    answers = {}
    for cold in ("calibrated", "include", "exclude"):
        code, stdout, stderr = cli(["similar", bundle, item, "-n", "20", "--json", "--cold", cold])
        assert code == 0, stderr
        answers[cold] = json.loads(stdout)
        assert answers[cold]["cold"] == [not i.startswith("i") for i in answers[cold]["items"]]
        assert answers[cold]["labels"] == [f"product {i}" for i in answers[cold]["items"]]
    assert sum(answers["include"]["cold"]) >= 10  # plain cosine: the catalogue crowds in
    assert sum(answers["calibrated"]["cold"]) <= 2 and sum(answers["exclude"]["cold"]) == 0
    code, stdout, _ = cli(["similar", bundle, item, "-n", "5", "--cold", "include"])
    assert code == 0 and "(cold)" in stdout
    code, _, stderr = cli(["similar", bundle, item, "--cold", "maybe"])
    assert code == 2 and "maybe" in stderr


def test_similar_table_fits_80_columns_on_a_wide_item_table(tmp_path, cli, monkeypatch):
    """A movielens-like table (19 genre flags): rank, id, title and score, within 80 columns."""
    ids = [str(i) for i in range(1, 41)]
    genres = {f"genre_{g}": [i % 2 for i in range(40)] for g in range(19)}
    table = pl.DataFrame({"item_id": ids, "title": [f"A Film With A Rather Long Title, Part {i} "
                                                    f"(199{i % 10})" for i in range(40)],
                          "release": ["01-Jan-1995"] * 40, **genres})
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ItemEmbeddings(ids, vectors, item_table=table).save(tmp_path / "wide")
    monkeypatch.setenv("COLUMNS", "80")
    code, stdout, stderr = cli(["similar", tmp_path / "wide", "1", "-n", "5"])
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "genre_0" not in stdout and "release" not in stdout
    assert sum(line.startswith("│") and "A Film With" in line for line in lines) == 5


def test_recommend_jsonl_in_and_out(cli_model, tmp_path, cli):
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": 7, "history": ["i1", "i2"]}\n'
                       '\n'
                       '{"id": "abc", "history": ["not-an-item", "i3", "also-unknown"]}\n'
                       '{"id": null, "history": []}\n')
    out = tmp_path / "recs.jsonl"
    code, _, stderr = cli(["recommend", cli_model, "--queries", queries, "--out", out,
                           "-n", "4", "-q"])
    assert code == 0, stderr
    assert "skipped 2 unknown history items" in stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == [7, "abc", None]
    for row, history in zip(rows, (["i1", "i2"], ["i3"], []), strict=True):
        assert list(row) == ["id", "items", "scores", "labels", "cold"]
        assert len(row["items"]) == len(row["scores"]) == len(row["labels"]) == 4
        assert row["cold"] == [False] * 4  # trained without an item table: nothing is cold
        assert not set(row["items"]) & set(history)
        assert row["scores"] == sorted(row["scores"], reverse=True)


@pytest.mark.parametrize(("content", "fragment"), [
    ('{"id": 1, "history": ["i1"]}\n{"id": 2, "history": [\n', ":2: not valid JSON"),
    ('{"id": 1, "items": ["i1"]}\n', ':1: expected {"id": ..., "history": [...]}'),
    ("\n\n", "no queries"),
])
def test_recommend_bad_queries_file(cli_model, tmp_path, cli, content, fragment):
    queries = tmp_path / "q.jsonl"
    queries.write_text(content)
    code, _, stderr = cli(["recommend", cli_model, "--queries", queries,
                           "--out", tmp_path / "r.jsonl", "-q"])
    assert_one_line_error(code, stderr, "q.jsonl", fragment)
    assert not (tmp_path / "r.jsonl").exists()


def test_version_prints_the_package_version(cli):
    code, stdout, stderr = cli(["--version"])
    assert code == 0, stderr
    assert stdout == f"itemvec {itemvec.__version__}\n"
    assert itemvec.__version__.count(".") >= 1


def test_similar_unknown_item_is_a_clear_error(cli_model, cli):
    code, _, stderr = cli(["similar", cli_model, "no-such-item"])
    assert_one_line_error(code, stderr, "unknown item 'no-such-item'")
    code, _, stderr = cli(["similar", cli_model, "i1", "-n", "0"])
    assert_one_line_error(code, stderr, "-n must be between 1 and 10000, got 0")


def test_missing_bundle(tmp_path, cli):
    code, _, stderr = cli(["similar", tmp_path / "nothing", "i1"])
    assert_one_line_error(code, stderr, "no such bundle directory")


# -- bad input through the command line ------------------------------------------------------------
@pytest.mark.parametrize(("name", "content", "options", "fragments"), [
    ("cols.csv", "sess,item_id\ns1,a\n", [], ["column 'session_id' (from --context) not found",
                                               "columns present: sess, item_id"]),
    ("empty.csv", "", [], ["empty.csv: file is empty"]),
    ("header.csv", "session_id,item_id\n", [], ["header but no rows"]),
    ("events.xls", "x", [], ["unknown file extension '.xls'"]),
    ("time.csv", "session_id,item_id,ts\ns1,a,1\ns1,b,soon\n", ["--time", "ts"],
     ["time.csv: row 3: column 'ts'", "'soon'"]),
    ("nulls.csv", "session_id,item_id\ns1,a\ns1,\n", [], ["nulls.csv: row 3: column 'item_id'"]),
    ("ok.csv", "session_id,item_id\ns1,a\ns1,b\n", ["--lr", "-1"],
     ["training.lr must be > 0, got -1"]),
    ("ok.csv", "session_id,item_id\ns1,a\ns1,b\n", ["--session-gap", "5m"],
     ["session_gap needs --time"]),
])
def test_bad_input_is_one_line_and_exit_code_2(write_file, tmp_path, cli, name, content, options,
                                              fragments):
    path = write_file(name, content)
    code, _, stderr = cli(["train", path, "--out", tmp_path / "model", "-q", *options])
    assert_one_line_error(code, stderr, *fragments)
    assert not (tmp_path / "model").exists()


def test_entry_point_bad_input_no_traceback(write_file, tmp_path):
    path = write_file("events.csv", "sess,item_id\ns1,a\n")
    done = run_entry_point("train", path, "--out", tmp_path / "model", "-q")
    assert_one_line_error(done.returncode, done.stderr, "events.csv",
                          "column 'session_id' (from --context) not found",
                          "columns present: sess, item_id")
    assert done.stdout == ""


def test_entry_point_unknown_item_and_usage_errors(cli_model):
    done = run_entry_point("similar", cli_model, "no-such-item", "--json")
    assert_one_line_error(done.returncode, done.stderr, "unknown item 'no-such-item'")
    usage = run_entry_point("similar", cli_model)  # missing ITEM_ID: click's usage error
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "Missing argument" in usage.stderr


def test_interrupted_train_leaves_no_bundle(shop_files, tmp_path, cli, monkeypatch):
    events, _ = shop_files
    out = tmp_path / "model"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle, "_write_parts", interrupted)
    code, _, stderr = cli(["train", events, "--time", "ts", "--out", out, "--epochs", "1",
                           "--dim", "8", "-q"])
    assert code == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_interrupted_retrain_keeps_the_previous_bundle(cli_model, shop_files, tmp_path, cli,
                                                       monkeypatch):
    import shutil

    out = Path(shutil.copytree(cli_model, tmp_path / "model"))
    before = load_embeddings(out).vectors.copy()
    real = bundle._write_parts

    def half_then_interrupt(staging, *args, **kwargs):
        real(staging, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle, "_write_parts", half_then_interrupt)
    code, _, _ = cli(["train", shop_files[0], "--time", "ts", "--out", out, "--epochs", "1",
                      "--dim", "8", "-q"])
    assert code == 130
    np.testing.assert_array_equal(load_embeddings(out).vectors, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# -- evaluate / synth / demo -----------------------------------------------------------------------
def test_synth_writes_events_and_items(tmp_path, cli):
    out = tmp_path / "shop.parquet"
    code, stdout, stderr = cli(["synth", "--events", "3000", "--items", "120", "--categories", "6",
                                "--out", out])
    assert code == 0, stderr
    events = pl.read_parquet(out)
    items = pl.read_parquet(tmp_path / "shop_items.parquet")
    assert events.height == 3000
    assert {"session_id", "item_id", "ts", "event"} <= set(events.columns)
    assert items.height == 120 and items["category"].n_unique() == 6
    assert set(events["item_id"].unique()) <= set(items["item_id"])
    code, _, stderr = cli(["synth", "--events", "10", "--items", "5", "--categories", "9",
                           "--out", out])
    assert_one_line_error(code, stderr, "--categories")


def test_evaluate_writes_a_report(tmp_path, cli):
    events = tmp_path / "shop.csv"
    assert cli(["synth", "--events", "6000", "--items", "150", "--categories", "6",
                "--out", events])[0] == 0
    report = tmp_path / "report.json"
    extras = all(importlib.util.find_spec(m) for m in ("gensim", "implicit"))
    baselines = "popularity,itemknn,ease" + (",item2vec,als" if extras else "")
    code, stdout, stderr = cli(["evaluate", events, "--time", "ts", "--max-queries", "500",
                                "--baselines", baselines, "--json", report, "-q"])
    assert code == 0, stderr
    assert "i2i" in stdout and "s2i" in stdout and "itemvec" in stdout
    payload = json.loads(report.read_text())
    assert payload["split"]["by_time"] is True
    s2i = payload["results"]["s2i"]
    assert {"itemvec", *baselines.split(",")} <= set(s2i)
    for name in ("itemvec", "ease"):  # the others: tests/evaluation/test_baselines.py
        assert s2i[name]["HR@20"] > s2i["popularity"]["HR@20"], name


def _table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("│ ").split("│")]
            for line in text.splitlines() if line.count("│") >= 5]


def test_demo_shows_itemvec_beating_popularity(tmp_path, cli):
    code, stdout, stderr = cli(["demo", "--events", "20000", "--items", "400", "--out", tmp_path,
                                "-q"])
    assert code == 0, stderr
    rows = {(row[0], row[1]): float(row[2]) for row in _table_rows(stdout)
            if len(row) >= 5 and row[0] in ("i2i", "s2i")}
    for task in ("i2i", "s2i"):
        assert rows[(task, "itemvec")] > rows[(task, "popularity")], rows
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    assert "next: itemvec similar" in stdout


def test_outputs_into_new_or_impossible_directories(cli_model, tmp_path, cli):
    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": 1, "history": ["i1"]}\n')
    out = tmp_path / "new" / "dir" / "recs.jsonl"
    code, _, stderr = cli(["recommend", cli_model, "--queries", queries, "--out", out, "-q"])
    assert code == 0, stderr
    assert json.loads(out.read_text())["id"] == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, stderr = cli(["recommend", cli_model, "--queries", queries,
                           "--out", blocker / "recs.jsonl", "-q"])
    assert_one_line_error(code, stderr, str(blocker))


def test_missing_optional_extra_names_the_extra(bundle_dir, tmp_path, monkeypatch, capsys):
    import sys

    from itemvec.cli.main import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plot] extra were absent
    monkeypatch.setattr(sys, "argv", ["itemvec", "plot", str(bundle_dir), "--out",
                                      str(tmp_path / "map.png")])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "pip install 'itemvec[plot]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_search_json_lists_the_title_match_first(tmp_path, cli):
    titles = {"50": "Star Wars (1977)", "172": "Empire Strikes Back, The (1980)",
              "222": "Star Trek: First Contact (1996)", "127": "Godfather, The (1972)"}
    vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    table = pl.DataFrame({"item_id": list(titles), "title": list(titles.values())})
    write_bundle(tmp_path / "films", ItemEmbeddings(list(titles), vectors, item_table=table),
                 config={}, stats={})
    code, stdout, stderr = cli(["search", tmp_path / "films", "star wars", "-n", "2", "--json"])
    assert code == 0, stderr
    payload = json.loads(stdout)
    assert payload["items"] == ["50", "172"] and len(payload["scores"]) == 2
    assert payload["scores"][0] == 1.0 and payload["matches"] == [{"item_id": "50", "score": 1.0}]


def test_index_command_stores_the_recommend_index_and_reports_its_recall(cli, tmp_path,
                                                                         monkeypatch):
    pytest.importorskip("faiss")
    import itemvec.cli.serve as serve_cli

    monkeypatch.setattr(serve_cli, "RECOMMEND_INDEX_MIN_ITEMS", 1000)  # 3,000 items
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    emb = ItemEmbeddings([f"i{i}" for i in range(3000)], vectors,
                         rng.normal(scale=0.3, size=3000).astype(np.float32), 0.1)
    path = write_bundle(tmp_path / "model", emb, config={}, stats={})
    code, out, err = cli(["index", path, "--backend", "ivf", "--queries", "100"])
    assert code == 0, err
    recall = float(out.split("built the recommend index")[1].split("recall@10 vs exact ")[1]
                   .split()[0])
    assert recall >= 0.98 and "on 100 random 5-item histories" in out
    meta = json.loads((path / "index-recommend.json").read_text())
    assert meta["n_items"] == 3000 and meta["params"]["popular"] == 1000


def test_serve_workers_names_the_indexes_each_worker_would_build(tmp_path):
    """Without stored indexes every worker builds its own; the CLI says which, once."""
    from itemvec.cli.serve import unstored_indexes

    big = {"n_items": 60_000, "files": {}}
    assert unstored_indexes(tmp_path, big, "auto") == ["hnsw", "recommend"]
    assert unstored_indexes(tmp_path, big, "exact") == []
    assert unstored_indexes(tmp_path, {"n_items": 10_000, "files": {}}, "auto") == []
    assert unstored_indexes(tmp_path, {"n_items": 10_000, "files": {}}, "ivf") == ["ivf"]
    compact = {"n_items": 60_000, "files": {"vector_rows.npy": "x"}}
    assert unstored_indexes(tmp_path, compact, "ivf") == ["ivf"]  # compact: exact recommend
    (tmp_path / "index-ivf.faiss").write_bytes(b"")
    (tmp_path / "index-recommend.faiss").write_bytes(b"")
    assert unstored_indexes(tmp_path, big, "ivf") == []
