"""One training loop: co-occurrence training, history fine-tuning and the cold-start tower all
run through ``Trainer.run``, so callbacks, divergence checks, checkpoints and an injected
(distributed) context apply to every stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from itemvec.config import IngestConfig, PipelineConfig, TrainingConfig
from itemvec.data.ingest import read_events
from itemvec.data.synth import generate, write
from itemvec.model.encoder import ItemEncoder
from itemvec.model.features import SideInformation
from itemvec.train.checkpoint import FILENAME, CheckpointManager, stage_filename
from itemvec.train.histories import (
    HistoryExamples,
    MaskedCrossEntropy,
    build_examples,
    finetune,
    round_size,
)
from itemvec.train.pipeline import read_item_table, train_on_log
from itemvec.train.trainer import LocalContext, Trainer, TrainingDivergedError
from tests.train.test_histories import _embeddings, _groups, _queries


class Interrupt(Exception):
    """Stands in for a crash at a chosen stage and epoch."""


def stop_at(stage: str, epoch: int):
    def callback(record: dict) -> None:
        if (record["stage"], record["epoch"]) == (stage, epoch):
            raise Interrupt(stage, epoch)
    return callback


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory):
    events, items = write(generate(3000, 60, n_categories=4, seed=1),
                          tmp_path_factory.mktemp("stages") / "ev.csv")
    config = PipelineConfig(ingest=IngestConfig(context="session_id", item="item_id", time="ts"),
                            training=TrainingConfig(device="cpu", epochs=4, dim=8))
    log = read_events(events, config.ingest)
    return log, read_item_table(items, "item_id"), config


class Recording(LocalContext):
    """A context that notes what each stage hands it: the hooks are injected, not patched."""

    def __init__(self) -> None:
        self.shards: list[type] = []
        self.steps = 0

    def shard(self, batch):
        self.shards.append(type(batch))
        return batch

    def after_backward(self, model) -> None:
        self.steps += 1


def test_every_stage_reports_through_callbacks_and_the_injected_context(small_shop):
    log, items, config = small_shop
    records, context = [], Recording()
    model = train_on_log(log, config, item_table=items, side=SideInformation(items),
                         progress=False, callbacks=[records.append], context=context)
    stages = [r["stage"] for r in records]
    assert stages[0] == "cooccurrence" and stages[-1] == "coldstart"
    assert {"cooccurrence", "histories-probe", "coldstart"} <= set(stages)
    first = stages.index("histories-probe")  # histories between the two, from a scored start
    assert records[first]["epoch"] == 0 and "validation" in records[first]
    middle = stages[first:stages.index("coldstart")]
    assert set(middle) <= {"histories-probe", "histories"}
    trained = [r for r in records if r["stage"].startswith("histories") and "loss" in r]
    assert len(trained) == model.stats["history_finetune"]["epochs_run"]
    # each stage's batches went through the context: anchor rows, histories, tower rows
    assert {np.ndarray, HistoryExamples, torch.Tensor} <= set(context.shards)
    assert context.steps > 0


def test_a_nan_in_the_history_stage_is_a_divergence_error(monkeypatch):
    log, baskets = _groups(4, 10, 100, seed=0)
    encoder = ItemEncoder(40, 8)
    emb = _embeddings(encoder)
    monkeypatch.setattr("itemvec.train.histories.history_loss",
                        lambda encoder, *a: encoder.item_bias.sum() * float("nan"))
    with pytest.raises(TrainingDivergedError, match="histories stage: loss became nan at epoch "
                                                    "1, step 1; lower training.history_lr"):
        finetune(encoder, emb, build_examples(log, emb), _queries(baskets), epochs=2, lr=0.01)


def _history_run(tmp_path, callbacks=(), resume=False):
    """Fine-tuning on planted groups from a random start, checkpointed after every round."""
    torch.manual_seed(0)
    log, _ = _groups(8, 10, 300, seed=0)
    _, held_out = _groups(8, 10, 100, seed=1)
    encoder = ItemEncoder(80, 16)
    emb = _embeddings(encoder)
    trainer = Trainer(TrainingConfig(device="cpu", checkpoint_every=0), progress=False,
                      callbacks=callbacks, checkpoint=CheckpointManager(tmp_path / "ck"),
                      resume=resume)
    report = finetune(encoder, emb, build_examples(log, emb), _queries(held_out), epochs=5,
                      lr=0.003, patience=5, trainer=trainer)
    return encoder, report


def test_interrupted_history_stage_resumes_to_the_same_weights(tmp_path):
    reference, full = _history_run(tmp_path / "reference")
    assert full["best_epoch"] == 5  # it kept improving: the resumed epochs matter
    with pytest.raises(Interrupt):  # dies in round 3, after round 2's checkpoint
        _history_run(tmp_path, callbacks=[stop_at("histories", 3)])
    assert (tmp_path / "ck" / stage_filename("histories")).exists()
    assert not (tmp_path / "ck" / FILENAME).exists()  # no co-occurrence stage ran here
    records = []
    resumed, report = _history_run(tmp_path, callbacks=[records.append], resume=True)
    assert [r["epoch"] for r in records] == [3, 4, 5]  # rounds 1-2 restored, not retrained
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert report["history"] == full["history"] and report["best"] == full["best"]


def test_pipeline_resume_skips_the_finished_stage_and_redoes_an_unsaved_one(small_shop,
                                                                             tmp_path):
    log, _, config = small_shop
    config.training.checkpoint_every = 0.0  # the module's config: set back at the end
    reference = train_on_log(log, config, progress=False)
    manager = CheckpointManager(tmp_path / "ck", every=0)
    with pytest.raises(Interrupt):  # the scored start of the histories stage: nothing saved yet
        train_on_log(log, config, progress=False, checkpoint=manager,
                     callbacks=[stop_at("histories-probe", 0)])
    records = []
    resumed = train_on_log(log, config, progress=False, callbacks=[records.append],
                           checkpoint=CheckpointManager(tmp_path / "ck", every=0), resume=True)
    assert {r["stage"] for r in records} <= {"histories-probe", "histories"}  # not cooccurrence
    np.testing.assert_array_equal(resumed.embeddings.vectors, reference.embeddings.vectors)
    assert resumed.stats["history"] == reference.stats["history"]
    manager.clear()  # every stage's file goes, then the folder
    assert not manager.directory.exists()
    config.training.checkpoint_every = None


def test_probe_gives_up_after_a_round_that_does_not_beat_the_start():
    torch.manual_seed(0)
    log, baskets = _groups(4, 10, 100, seed=0)
    encoder = ItemEncoder(40, 8)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    emb = _embeddings(encoder)
    report = finetune(encoder, emb, build_examples(log, emb), _queries(baskets), epochs=3,
                      lr=1e-9, probe_examples=100)
    assert report["best_epoch"] == 0 and report["epochs_run"] == 1  # no pass was paid for
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, before[name])


def test_rounds_are_a_fixed_amount_of_work_but_not_tiny():
    assert round_size(300_000, 2**14) == 2**14  # 16k items: 16k examples a round
    assert round_size(300_000, 2**20) == 4096  # never fewer
    assert round_size(30_000, 200) == 30_000  # a small catalogue: whole passes


def test_hand_written_gradient_matches_autograd():
    torch.manual_seed(0)
    query = torch.randn(5, 4, requires_grad=True)
    vectors = F.normalize(torch.randn(9, 4), dim=1).requires_grad_()
    bias = torch.randn(9, requires_grad=True)
    items = torch.tensor([[0, 1, 9], [2, 9, 9], [3, 4, 5], [6, 9, 9], [7, 8, 9]])  # 9 = pad
    targets = torch.tensor([2, 0, 1, 8, 0])
    loss = MaskedCrossEntropy.apply(query, vectors, bias, items, targets, 0.2, 1.5)
    grads = torch.autograd.grad(loss, (query, vectors, bias))
    logits = query @ vectors.T / 0.2 + 1.5 * bias
    logits = torch.cat([logits, logits.new_zeros(5, 1)], dim=1).scatter(1, items, -torch.inf)
    expected = F.cross_entropy(logits[:, :-1], targets)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    for got, want in zip(grads, torch.autograd.grad(expected, (query, vectors, bias)),
                         strict=True):
        torch.testing.assert_close(got, want)
