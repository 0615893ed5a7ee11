"""The encoder: unit vectors out; the zero-initialised residual MLP passes a start through."""

from __future__ import annotations

import numpy as np
import torch

from itemvec.model.encoder import ItemEncoder


def test_outputs_are_unit_vectors():
    torch.manual_seed(0)
    for hidden in (0, 32):
        encoder = ItemEncoder(n_items=50, dim=16, hidden=hidden)
        vectors = encoder.all_vectors()
        assert vectors.shape == (50, 16)
        torch.testing.assert_close(vectors.norm(dim=1), torch.ones(50))
        batch = encoder(torch.tensor([[1, 2], [3, 4]]))
        assert batch.shape == (2, 2, 16)
        torch.testing.assert_close(batch.norm(dim=-1), torch.ones(2, 2))


def test_initialise_passes_through_the_zero_initialised_mlp():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(30, 8)).astype(np.float32)
    bias = rng.normal(size=30).astype(np.float32)
    encoder = ItemEncoder(n_items=30, dim=8, hidden=64)
    encoder.initialise(start, bias)
    vectors, exported_bias = encoder.export()
    expected = start / np.linalg.norm(start, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exported_bias, bias)
    assert vectors.dtype == np.float32 and exported_bias.dtype == np.float32


def test_mlp_learns_after_a_step():
    """Zero init must not freeze the MLP: one step moves its last layer."""
    torch.manual_seed(0)
    encoder = ItemEncoder(n_items=10, dim=4, hidden=8)
    optimiser = torch.optim.SGD(encoder.parameters(), lr=0.1)
    loss = -(encoder(torch.tensor([0])) * encoder(torch.tensor([1]))).sum()
    loss.backward()
    optimiser.step()
    assert encoder.mlp[2].weight.abs().sum() > 0


def test_export_keeps_training_mode():
    encoder = ItemEncoder(n_items=5, dim=4)
    encoder.train()
    encoder.export()
    assert encoder.training
    encoder.eval()
    encoder.export()
    assert not encoder.training


def test_all_vectors_reads_the_table_with_the_gathers_values_and_gradients():
    """``all_vectors`` skips the gather of every row; weights and gradients must not change."""
    torch.manual_seed(0)
    encoder = ItemEncoder(30, 8, hidden=4)
    torch.nn.init.normal_(encoder.mlp[-1].weight)  # the residual MLP is zero at the start
    direct = encoder.all_vectors()
    gathered = encoder(torch.arange(30))
    torch.testing.assert_close(direct, gathered, rtol=0, atol=0)
    upstream = torch.randn(30, 8)
    params = [p for p in encoder.parameters() if p is not encoder.item_bias]
    for a, b in zip(*(torch.autograd.grad(v, params, upstream) for v in (direct, gathered)),
                    strict=True):
        torch.testing.assert_close(a, b)
