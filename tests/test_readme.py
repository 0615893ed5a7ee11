"""README's Python API examples run as written (on a small synthetic shop)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from itemvec.data.synth import generate, write

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_python_api_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    blocks = python_blocks()
    assert len(blocks) >= 2 and "ItemVec(" in blocks[0] and "ItemEmbeddings.load" in blocks[1]
    monkeypatch.chdir(tmp_path)
    write(generate(8_000, 120, n_categories=6, seed=1), Path("shop/events.csv"))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["emb"].recommend(["i1", "nope"]).skipped == 1
    assert namespace["vector"].shape == (64,)
