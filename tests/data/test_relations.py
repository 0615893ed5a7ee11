"""Relation triples -> item x item edges added to the co-occurrence targets."""

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.data.relations import add_relations, read_relations, relation_matrix


def test_shared_tails_and_direct_edges(tmp_path):
    path = tmp_path / "rel.csv"
    pl.DataFrame({"head": ["a", "b", "c", "d", "a"], "relation": ["brand"] * 4 + ["complement"],
                  "tail": ["acme", "acme", "acme", "other", "d"]}).write_csv(path)
    triples = read_relations(path)
    items = np.array(["a", "b", "c", "d", "e"], dtype=object)
    m = relation_matrix(triples, items).toarray()
    np.testing.assert_allclose(m, m.T)
    assert m[0, 1] == m[1, 2] > 0  # a, b, c share the brand acme: 1 / (3 - 1) each
    assert m[0, 3] == 1.0  # a complements d
    assert m[3, 1] == 0 and m[4].sum() == 0 and np.diag(m).sum() == 0


def test_add_relations_scales_to_behaviour_mass():
    cooc = sp.csr_matrix(np.array([[0, 4.0], [4.0, 0]], dtype=np.float32))
    rel = sp.csr_matrix(np.array([[0, 1.0], [1.0, 0]], dtype=np.float32))
    out = add_relations(cooc, rel, 0.5)
    assert out.sum() == 1.5 * cooc.sum()
    assert add_relations(cooc, rel, 0.0) is cooc
