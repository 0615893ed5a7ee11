"""``itemvec train`` / ``evaluate`` take data as users have it: the issue-18 command forms."""

from __future__ import annotations

import random

import pytest

from itemvec.query.embeddings import load_embeddings

FAST = ["--epochs", "1", "--history-epochs", "0", "--device", "cpu", "-q"]


def histories(n_users: int = 60, seed: int = 0) -> list[tuple[str, list[str]]]:
    """Users walking a chain of 30 items (enough structure for a quick model)."""
    rng = random.Random(seed)
    out = []
    for u in range(n_users):
        start = rng.randrange(30)
        out.append((f"u{u}", [f"i{(start + k) % 30}" for k in range(rng.randrange(3, 8))]))
    return out


def test_headerless_tsv_with_sep_backslash_t(tmp_path, cli):
    rows = [f"{user}\t{item}\t4\t{1000 + k}" for user, items in histories()
            for k, item in enumerate(items)]
    (tmp_path / "u.data").write_text("\n".join(rows) + "\n")
    out = tmp_path / "model"
    code, stdout, stderr = cli(["train", tmp_path / "u.data", "--sep", "\\t", "--no-header",
                                "--columns", "user,item,rating,ts", "--context", "user",
                                "--item", "item", "--time", "ts", "--out", out, *FAST])
    assert code == 0, stderr
    config = load_embeddings(out).metadata["config"]["ingest"]
    assert config["sep"] == "\t" and config["header"] is False and config["time"] == "ts"


def test_sequences_format(tmp_path, cli):
    lines = [" ".join([user, *items]) for user, items in histories()]
    (tmp_path / "Beauty.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    code, _, stderr = cli(["train", tmp_path / "Beauty.txt", "--format", "sequences",
                           "--out", out, *FAST])
    assert code == 0, stderr
    assert load_embeddings(out).metadata["stats"]["events"] > 200


def test_several_paths_then_evaluate(tmp_path, cli):
    data = histories()
    for name, part in (("a.csv", data[:30]), ("b.csv", data[30:])):
        rows = [f"{user},{item}" for user, items in part for item in items]
        (tmp_path / name).write_text("basket,sku\n" + "\n".join(rows) + "\n")
    out = tmp_path / "model"
    code, _, stderr = cli(["train", tmp_path / "a.csv", tmp_path / "b.csv", "--context", "basket",
                           "--item", "sku", "--out", out, *FAST])
    assert code == 0, stderr
    assert load_embeddings(out).metadata["stats"]["events"] == sum(len(i) for _, i in data)
    code, _, stderr = cli(["evaluate", str(tmp_path / "*.csv"), "--context", "basket", "--item",
                           "sku", "--baselines", "popularity", "--max-queries", "20", "-q"])
    assert code == 0, stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (["--session-gap", "30", "--time", "ts"], "session_gap needs a unit, got '30'"),
    (["--event", "ev", "--event-weights", "view=1,basket=3"], "holds only: 'view'"),
    (["--streaming", "on"], "--streaming on reads one CSV or Parquet file"),
])
def test_input_errors_are_one_line(tmp_path, cli, args, fragment):
    for name in ("a.csv", "b.csv"):
        (tmp_path / name).write_text("session_id,item_id,ts,ev\ns1,a,1,view\ns1,b,2,view\n")
    code, _, stderr = cli(["train", tmp_path / "a.csv", tmp_path / "b.csv", *args, "--out",
                           tmp_path / "m", *FAST])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert fragment in lines[0]


def test_cooccur_counts_a_plain_file_and_says_why_it_cannot_stream_others(tmp_path, cli):
    (tmp_path / "c.csv").write_text("session_id,item_id\ns1,a\ns1,b\ns2,a\ns2,b\n")
    code, stdout, stderr = cli(["cooccur", tmp_path / "c.csv", "--out", tmp_path / "cc", "-q"])
    assert code == 0 and "counted 2 items" in stdout, stderr
    code, _, stderr = cli(["cooccur", tmp_path / "c.csv", "--sep", ",", "--out", tmp_path / "x"])
    assert code == 2 and "cooccur streams one CSV or Parquet file with a header" in stderr


def test_update_switches_header_either_way(tmp_path, cli):
    """A bundle trained on a headerless file takes an update file that has a header
    (``--header``), and the header row does not become an item."""
    data = histories()
    rows = [f"{user}\t{item}\t4\t{1000 + k}" for user, items in data[:40]
            for k, item in enumerate(items)]
    (tmp_path / "u.data").write_text("\n".join(rows) + "\n")
    code, _, stderr = cli(["train", tmp_path / "u.data", "--sep", "\\t", "--no-header",
                           "--columns", "user,item,rating,ts", "--context", "user", "--item",
                           "item", "--time", "ts", "--out", tmp_path / "model", *FAST])
    assert code == 0, stderr
    new = [f"{user}\t{item}\t4\t{5000 + k}" for user, items in data[40:]
           for k, item in enumerate(items)]
    (tmp_path / "new.tsv").write_text("user\titem\trating\tts\n" + "\n".join(new) + "\n")
    code, _, stderr = cli(["update", tmp_path / "model", tmp_path / "new.tsv", "--header",
                           "--out", tmp_path / "next", "-q"])
    assert code == 0, stderr
    updated = load_embeddings(tmp_path / "next")
    assert "item" not in updated and "ts" not in updated
    assert updated.metadata["config"]["ingest"]["header"] is True
