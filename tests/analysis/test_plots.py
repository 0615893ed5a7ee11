"""Item maps and training curves: PNG and self-contained HTML, checked on planted structure."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from itemvec.analysis.plots import (  # noqa: E402
    colour_scale,
    colouring_kind,
    colours,
    curves_figure,
    honest_limits,
    map_figure,
    map_html,
    map_payload,
    png_bytes,
    project,
)
from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.train.pipeline import save_model  # noqa: E402
from itemvec.util.errors import ItemvecError  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def table_bundle(trained, shop, shop_config, tmp_path_factory):
    """The shared trained model saved with the shop's item table (category, title, ...)."""
    emb = trained.embeddings
    embeddings = ItemEmbeddings(emb.item_ids, emb.vectors, emb.item_bias, emb.temperature,
                                emb.query, emb.metadata, item_table=shop.items)
    model = dataclasses.replace(trained, embeddings=embeddings)
    return save_model(model, tmp_path_factory.mktemp("plots") / "model", shop_config)


def payload_of(page: str) -> dict:
    match = re.search(r'<script id="itemmap-data" type="application/json">(.*?)</script>', page,
                      re.S)
    assert match, "the page embeds its points"
    return json.loads(match.group(1))


def test_html_map_is_self_contained_and_keeps_categories_together(table_bundle, cli, tmp_path,
                                                                  categories, trained):
    code, out, err = cli(["plot", table_bundle, "--out", tmp_path / "map.html", "--quiet"])
    assert code == 0, err
    page = (tmp_path / "map.html").read_text()
    assert not re.search(r"""(src|href)=["']?https?:""", page), "no network access"
    data = payload_of(page)
    assert data["method"] == "tsne" and data["column"] == "category"
    ids = data["ids"]
    assert len(ids) == len(trained.embeddings)
    assert data["values"][ids.index("i0")] == categories["i0"]
    assert "item 0" in data["title"][ids.index("i0")]
    # planted structure survives the projection: 2-D nearest neighbours share the category
    xy = np.column_stack([data["x"], data["y"]])
    counts = dict(zip(trained.embeddings.item_ids, trained.item_counts, strict=True))
    well = [i for i, item in enumerate(ids) if counts[item] >= 20]
    distance = ((xy[well, None, :] - xy[None, :, :]) ** 2).sum(-1)
    distance[np.arange(len(well)), well] = np.inf
    nearest = distance.argmin(1)
    same = np.mean([categories[ids[w]] == categories[ids[j]] for w, j in
                    zip(well, nearest, strict=True)])
    assert same > 0.8, same
    # the training curves came along, as a PNG
    assert (tmp_path / "map_training.png").read_bytes().startswith(PNG)
    assert "map_training.png" in out


def test_png_map_and_explicit_curves(table_bundle, cli, tmp_path):
    code, _, err = cli(["plot", table_bundle, "--out", tmp_path / "m.png", "--method", "pca",
                        "--color-by", "price", "--curves", tmp_path / "c.png", "-q"])
    assert code == 0, err
    assert (tmp_path / "m.png").read_bytes().startswith(PNG)
    assert (tmp_path / "c.png").read_bytes().startswith(PNG)


def test_plot_errors_are_one_line(table_bundle, cli, tmp_path):
    code, _, err = cli(["plot", table_bundle, "--out", tmp_path / "m.png", "--color-by", "nope"])
    assert code == 2 and "known:" in err and "category" in err
    code, _, err = cli(["plot", table_bundle, "--out", tmp_path / "m.pdf"])
    assert code == 2 and ".png or .html" in err
    code, _, err = cli(["plot", table_bundle, "--out", tmp_path / "m.png", "--method", "mds"])
    assert code == 2 and "tsne" in err
    assert "Traceback" not in err


def test_projection_methods():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    coords, used = project(vectors, "pca")
    assert coords.shape == (60, 2) and used == "pca"
    # PCA keeps the direction of largest spread on the first axis
    stretched = vectors.copy()
    stretched[:, 3] *= 20
    coords, _ = project(stretched, "pca")
    assert abs(np.corrcoef(coords[:, 0], stretched[:, 3])[0, 1]) > 0.95
    assert project(vectors[:3], "auto")[1] == "identity"
    with pytest.raises(ItemvecError, match="unknown"):
        project(vectors, "mds")


def test_umap_is_optional():
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ItemvecError, match="umap-learn"):
            project(np.zeros((10, 4), np.float32), "umap")
    else:  # pragma: no cover - umap installed: its first fit compiles, too slow for a unit test
        pytest.skip("umap-learn is installed")


def test_colours_for_categories_and_numbers():
    many = np.asarray([f"c{i % 30}" for i in range(300)], dtype=object)
    hexes, legend = colours(many)
    assert len(hexes) == 300 and len(legend) == 20
    assert legend[-1]["name"].startswith("other (11 more)")
    assert len({h for h in hexes}) == 20  # 19 colours + grey
    numbers = np.asarray([1, 10, 100, 1000], dtype=object)
    hexes, legend = colours(numbers)
    assert hexes[0] != hexes[-1] and [e["name"] for e in legend] == ["low (1)", "high (1000)"]


def test_html_survives_hostile_titles():
    payload = {"ids": ["a"], "x": [0.0], "y": [0.0], "color": None, "legend": [],
               "column": None, "values": None, "title": ["</script><script>alert(1)</script>"],
               "method": "pca"}
    page = map_html(payload, "t <b>")
    assert "<script>alert(1)" not in page
    assert payload_of(page)["title"] == payload["title"]
    assert "t &lt;b&gt;" in page


def test_curves_without_validation():
    fig = curves_figure([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}])
    assert len(fig.axes) == 1
    assert png_bytes(fig).startswith(PNG)
    with pytest.raises(ItemvecError, match="no training history"):
        curves_figure([])


@pytest.mark.parametrize(("values", "kind"), [
    ([1, 10, 100, 7], "numeric"), ([0.5, 2.0, None], "numeric"), ([0, 1, 1, 0], "boolean"),
    ([True, False], "boolean"), (["yes", "no", None], "boolean"), ([1.0, 0.0], "boolean"),
    (["shoes", "hats"], "categorical"), (["1", "2", "3"], "categorical"), (None, None),
])
def test_colouring_kind(values, kind):
    assert colouring_kind(None if values is None else np.asarray(values, dtype=object)) == kind


def test_booleans_get_two_distinct_colours_with_a_legend():
    hexes, legend = colours(np.asarray([0, 1, 1, 0, None], dtype=object))
    assert hexes[0] == hexes[3] and hexes[1] == hexes[2] and hexes[0] != hexes[1]
    assert [e["name"] for e in legend] == ["0", "1", "(none)"]
    blue, orange = (int(h[1:3], 16) for h in (hexes[0], hexes[1]))  # red channel: not two blues
    assert abs(blue - orange) > 100


def test_counts_over_orders_of_magnitude_use_a_log_scale():
    assert colour_scale(np.asarray([1, 10, 1000], dtype=object))["log"] is True
    assert colour_scale(np.asarray([3, 5, 9], dtype=object)) == {
        "min": 3.0, "max": 9.0, "log": False, "cmap": "viridis"}
    hexes, _ = colours(np.asarray([1, 10, 100, 1000], dtype=object))
    assert len(set(hexes)) == 4  # evenly spread on the log scale, not all dark


def map_of(values, titles=None, counts=None) -> dict:
    n = len(values)
    rng = np.random.default_rng(0)
    table = {"item_id": [f"i{k}" for k in range(n)], "flag": values,
             "count": counts if counts is not None else list(range(n))}
    if titles is not None:
        table["Title"] = titles
    import polars as pl

    emb = ItemEmbeddings(table["item_id"], rng.normal(size=(n, 4)), item_table=pl.DataFrame(table))
    return map_payload(emb, rng.normal(size=(n, 2)).astype(np.float32), "flag", "pca")


def test_numeric_map_has_a_colour_bar_and_named_landmarks():
    titles = [f"Film {k}" for k in range(30)]
    payload = map_of([float(k) for k in range(30)], titles)
    assert payload["kind"] == "numeric" and payload["scale"]["max"] == 29.0
    assert [m["text"] for m in payload["landmarks"]] == [f"Film {k}" for k in range(29, 21, -1)]
    fig = map_figure(payload, "t")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "flag"  # the colour bar
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"Film 29", "Film 22"} <= texts and "Film 0" not in texts
    assert png_bytes(fig).startswith(PNG)


def test_boolean_map_has_a_legend_not_a_colour_bar():
    payload = map_of([k % 2 for k in range(30)])
    assert payload["kind"] == "boolean" and payload["scale"] is None
    fig = map_figure(payload, "t")
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == ["0", "1"]
    assert payload["landmarks"][0]["text"] == "i29"  # no label column: the id


def test_curves_start_at_zero_and_show_epoch_zero():
    history = [{"epoch": 0, "validation": 0.30}, {"epoch": 1, "loss": 2.31, "validation": 0.31},
               {"epoch": 2, "loss": 2.30, "validation": 0.312}]
    fig = curves_figure(history, best_epoch=2)
    loss_axis, validation_axis = fig.axes
    assert loss_axis.get_ylim()[0] == 0.0 and loss_axis.get_ylim()[1] > 2.31
    assert validation_axis.get_ylim()[0] == 0.0
    assert validation_axis.get_xlim()[0] < 0 < validation_axis.get_xlim()[1]
    assert honest_limits([-1.0, 1.0]) == (-1.1, 1.1)
    assert honest_limits([]) == (0.0, 1.0)
