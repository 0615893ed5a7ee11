"""Injected faults: kill -9 during training and during a bundle write, NaN/inf, corrupt bundles.

Each test breaks something on purpose and checks the promise that matters to a user: the resumed
run ends with the same weights, the previous bundle is still there and loads, a diverged run names
its epoch and step and writes nothing, a damaged bundle is refused with a one-line reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch

from itemvec.config import IngestConfig, PipelineConfig, TrainingConfig
from itemvec.data.synth import generate, write
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings
from itemvec.store.bundle import CHECKPOINT_DIRNAME, MANIFEST, write_bundle
from itemvec.train.checkpoint import FILENAME, CheckpointManager
from itemvec.train.trainer import Trainer, TrainingDivergedError
from itemvec.util.errors import BundleError, ItemvecError

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARGS = ["--context", "session_id", "--item", "item_id", "--time", "ts", "--epochs", "10",
              "--dim", "32", "--device", "cpu", "--checkpoint-every", "0", "-q"]


def _env() -> dict[str, str]:
    """One thread everywhere: the runs being compared must do identical float arithmetic."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _train(events: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from itemvec.cli.main import main; main()",
                             "train", str(events), "--out",
                             str(out), *TRAIN_ARGS, *extra], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 240) -> str:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stderr


def _kill_after_next_checkpoint(process: subprocess.Popen, checkpoint: Path,
                                timeout: float = 240) -> None:
    """SIGKILL ``process`` as soon as a checkpoint newer than the current one is on disk."""
    def inode() -> int | None:
        try:
            return checkpoint.stat().st_ino
        except FileNotFoundError:
            return None

    before, deadline = inode(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = inode()
        if now is not None and now != before:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail(f"training ended (rc {process.returncode}) before it could be killed: "
                        f"{process.stderr.read()}")
        time.sleep(0.005)
    process.kill()
    pytest.fail("no checkpoint appeared in time")


def _bundle_parts(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in
            ("embeddings.npy", "item_bias.npy", "encoder.safetensors")}


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> Path:
    """A shop big enough that ten epochs outlast the reaction time of the killer."""
    return write(generate(20_000, 800, n_categories=16, seed=3),
                 tmp_path_factory.mktemp("faults") / "events.csv")[0]


def test_kill_9_twice_then_resume_matches_an_uninterrupted_run(events, tmp_path):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    uninterrupted = _train(events, reference)  # runs alongside the crashing one
    checkpoint = crashed / CHECKPOINT_DIRNAME / FILENAME

    first = _train(events, crashed)
    _kill_after_next_checkpoint(first, checkpoint)
    assert first.returncode == -signal.SIGKILL
    assert not (crashed / MANIFEST).exists()  # no bundle yet, only the checkpoint
    killed_at = CheckpointManager(checkpoint.parent).load().epoch

    second = _train(events, crashed, "--resume")  # killed again, after its own first checkpoint
    _kill_after_next_checkpoint(second, checkpoint)
    resumed_at = CheckpointManager(checkpoint.parent).load().epoch
    assert resumed_at > killed_at

    log = _finish(_train(events, crashed, "--resume"))
    assert f"after epoch {resumed_at} of 10" in log
    _finish(uninterrupted)
    assert _bundle_parts(crashed) == _bundle_parts(reference)  # bit-identical weights
    stats = [json.loads((p / MANIFEST).read_text())["stats"] for p in (crashed, reference)]
    assert stats[0]["history"] == stats[1]["history"]
    assert stats[0]["best_epoch"] == stats[1]["best_epoch"]
    assert not checkpoint.parent.exists()  # the finished bundle replaced the checkpoint
    load_embeddings(crashed)  # checksums hold


# -- bundles: crashes while writing, damage after writing ------------------------------------------
def _embeddings(seed: int, n: int = 50, dim: int = 8) -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ItemEmbeddings([f"i{k}" for k in range(n)], vectors, rng.normal(size=n).astype(np.float32))


def _write(out: Path, seed: int) -> Path:
    return write_bundle(out, _embeddings(seed), config={}, stats={"seed": seed},
                        encoder_state={"w": torch.arange(6.0)})


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


@pytest.fixture
def old_bundle(tmp_path) -> Path:
    return _write(tmp_path / "model", seed=1)


def test_failure_mid_write_keeps_the_previous_bundle(old_bundle, monkeypatch):
    before = _digest(old_bundle)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("itemvec.store.bundle.save_sparse", disk_full)  # after the .npy files
    with pytest.raises(ItemvecError, match=r"model: no space left on device .*needs about"):
        write_bundle(old_bundle, _embeddings(2), config={}, stats={},
                     cooccurrence=sp.eye(50, format="csr"))
    assert _digest(old_bundle) == before
    assert sorted(p.name for p in old_bundle.parent.iterdir()) == ["model"]  # staging removed
    assert load_embeddings(old_bundle).metadata["stats"] == {"seed": 1}


KILL_MID_WRITE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    import itemvec.store.bundle as bundle
    from itemvec.query.embeddings import ItemEmbeddings

    vectors = np.eye(50, 8, dtype=np.float32) + 0.1
    embeddings = ItemEmbeddings([f"i{k}" for k in range(50)], vectors, np.zeros(50, np.float32))
    real_save = np.save
    def slow_save(path, array, **kwargs):
        real_save(path, array, **kwargs)
        if str(path).endswith("item_bias.npy"):
            Path(sys.argv[2]).touch()  # tell the parent: half the parts are on disk
            time.sleep(60)
    bundle.np.save = slow_save
    bundle.write_bundle(Path(sys.argv[1]), embeddings, config={}, stats={"seed": 2})
""")


def test_kill_9_mid_write_keeps_the_previous_bundle(old_bundle, tmp_path):
    before, ready = _digest(old_bundle), tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", KILL_MID_WRITE, str(old_bundle), str(ready)],
                               env=_env())
    deadline = time.monotonic() + 120
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ready.exists(), "the writer never reached the middle of the write"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _digest(old_bundle) == before
    assert load_embeddings(old_bundle).metadata["stats"] == {"seed": 1}
    leftovers = [p.name for p in old_bundle.parent.iterdir() if p.name.startswith(".model.tmp-")]
    assert len(leftovers) == 1  # the killed writer's staging dir: harmless, never read
    _write(old_bundle, seed=3)  # the next write still works
    assert load_embeddings(old_bundle).metadata["stats"] == {"seed": 3}


def _watch_renames(monkeypatch, bundle: Path) -> list[bool]:
    """After each rename the writer makes: is there a loadable bundle at ``bundle``?"""
    present, real = [], os.replace

    def replace(src, dst):
        real(src, dst)
        present.append((bundle / MANIFEST).is_file())

    monkeypatch.setattr("itemvec.util.files.os.replace", replace)
    return present


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")
def test_replacing_a_bundle_never_leaves_the_path_missing(old_bundle, monkeypatch):
    present = _watch_renames(monkeypatch, old_bundle)
    _write(old_bundle, seed=4)
    assert all(present)  # one renameat2(RENAME_EXCHANGE): no instant without a bundle
    assert load_embeddings(old_bundle).metadata["stats"] == {"seed": 4}
    assert sorted(p.name for p in old_bundle.parent.iterdir()) == ["model"]


def test_swap_without_renameat2_still_replaces(old_bundle, monkeypatch):
    monkeypatch.setattr("itemvec.util.files._exchange", lambda a, b: False)
    present = _watch_renames(monkeypatch, old_bundle)
    _write(old_bundle, seed=5)
    assert present == [False, True]  # the fallback's two renames: a brief gap, both dirs whole
    assert load_embeddings(old_bundle).metadata["stats"] == {"seed": 5}
    assert sorted(p.name for p in old_bundle.parent.iterdir()) == ["model"]


@pytest.mark.parametrize("part", ["embeddings.npy", "item_bias.npy", "items.parquet",
                                  "encoder.safetensors"])
@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_bundle_is_refused_with_the_file_named(old_bundle, part, damage):
    path = old_bundle / part
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x01]))
    else:
        path.unlink()
    with pytest.raises(BundleError, match=part.replace(".", r"\.")):
        load_embeddings(old_bundle)


@pytest.mark.parametrize("manifest,message", [
    (b"", "corrupt"), (b'{"format_version": 1, "files"', "corrupt"), (b"\xff\xfe", "corrupt"),
    (json.dumps({"format_version": 99}).encode(), "version 99 is newer"),
    (json.dumps({"format_version": "1"}).encode(), "format_version = '1'"),
])
def test_bad_manifest_is_refused(old_bundle, manifest, message):
    (old_bundle / MANIFEST).write_bytes(manifest)
    with pytest.raises(BundleError, match=message):
        load_embeddings(old_bundle)


def test_cli_reports_a_corrupt_bundle_in_one_line(old_bundle, cli):
    (old_bundle / "embeddings.npy").write_bytes(b"\x93NUMPY garbage")
    code, _, err = cli(["similar", old_bundle, "i1"])
    assert code == 2 and err.count("\n") == 1 and "checksum mismatch" in err


def test_a_failing_checkpoint_write_warns_and_training_goes_on(small_matrix, tmp_path,
                                                               monkeypatch, caplog):
    manager = CheckpointManager(tmp_path / "ck", every=0)
    config = TrainingConfig(device="cpu", epochs=3, dim=16, checkpoint_every=0)
    real_save, calls = CheckpointManager.save, []

    def full_disk_after_first(self, state):
        calls.append(state.epoch)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_save(self, state)

    monkeypatch.setattr(CheckpointManager, "save", full_disk_after_first)
    result = Trainer(config, progress=False, checkpoint=manager).fit(small_matrix)
    assert len(result.history) == 3 and calls == [1, 2, 3]
    assert "No space left on device" in caplog.text and "training goes on" in caplog.text
    assert manager.load().epoch == 1  # the last good checkpoint is still there


# -- divergence: NaN/inf is reported with its epoch and step, and nothing is saved ------------------
class Poisoned:
    """Wraps an objective; at (epoch, step) makes the loss NaN, or only the gradients."""

    def __init__(self, inner, epoch: int, step: int, where: str) -> None:
        self.inner, self.epoch, self.step, self.where = inner, epoch, step, where
        self.epochs_seen = 0

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, rng):
        self.epochs_seen += 1
        for number, batch in enumerate(self.inner.batches(rng), start=1):
            yield (self.epochs_seen, number), batch

    def loss(self, encoder, tagged):
        (epoch, step), batch = tagged
        loss = self.inner.loss(encoder, batch)
        if (epoch, step) == (self.epoch, self.step):
            if self.where == "loss":
                return loss * float("nan")
            encoder.item_bias.register_hook(lambda grad: grad * float("nan"))
        return loss


@pytest.fixture(scope="module")
def small_matrix(events):
    from itemvec.counting.cooccurrence import count_pairs
    from itemvec.data.ingest import read_events

    config = PipelineConfig(ingest=IngestConfig(context="session_id", item="item_id", time="ts"))
    return count_pairs(read_events(events, config.ingest), config.cooccurrence)


def _poison(monkeypatch, epoch: int, step, where: str) -> list:
    import itemvec.train.trainer as training

    made = []
    real = training.build_objective

    def build(targets, config, device):
        inner = real(targets, config, device)
        made.append(Poisoned(inner, epoch, len(inner) if step == "last" else step, where))
        return made[-1]

    monkeypatch.setattr(training, "build_objective", build)
    return made


def test_nan_loss_names_epoch_and_step_and_checkpoint_stays_clean(small_matrix, monkeypatch,
                                                                    tmp_path):
    _poison(monkeypatch, epoch=3, step=2, where="loss")
    manager = CheckpointManager(tmp_path / "ck", every=0)
    config = TrainingConfig(device="cpu", epochs=5, dim=16, checkpoint_every=0)
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 3, step 2"):
        Trainer(config, progress=False, checkpoint=manager).fit(small_matrix)
    state = manager.load()
    assert state.epoch == 2  # the last good epoch; the poisoned one was never saved
    assert all(torch.isfinite(t).all() for t in state.encoder.values())


def test_nan_weights_after_the_last_step_are_caught(small_matrix, monkeypatch):
    _poison(monkeypatch, epoch=2, step="last", where="gradient")  # the loss stays finite
    config = TrainingConfig(device="cpu", epochs=3, dim=16)
    with pytest.raises(TrainingDivergedError, match=r"weights item_bias became inf or NaN in "
                                                   r"epoch 2"):
        Trainer(config, progress=False).fit(small_matrix)


def test_divergence_in_the_pipeline_keeps_the_previous_bundle(events, old_bundle, monkeypatch,
                                                              cli):
    _poison(monkeypatch, epoch=1, step=1, where="loss")
    before = _digest(old_bundle)
    code, _, err = cli(["train", events, "--out", old_bundle, *TRAIN_ARGS])
    assert code == 2 and "loss became nan at epoch 1, step 1" in err
    assert err.count("\n") == 1  # one line, no traceback
    assert _digest(old_bundle) == before


def test_overflowing_learning_rate_is_a_clear_error(events, tmp_path, cli):
    config = tmp_path / "huge-lr.json"
    config.write_text(json.dumps({"training": {"lr": 1e38}}))
    code, _, err = cli(["train", events, "--out", tmp_path / "m", "--config", config,
                        *TRAIN_ARGS])
    assert code == 2 and "overflowed at epoch 1, step 1; lower training.lr" in err
    assert not (tmp_path / "m" / MANIFEST).exists()


def test_overflowing_counts_are_a_clear_error(events, tmp_path, cli):
    code, _, err = cli(["train", events, "--out", tmp_path / "m", "--event", "event",
                        "--event-weights", "view=1e308,cart=1e308,purchase=1e308", *TRAIN_ARGS])
    assert code == 2 and "co-occurrence counts contain inf or NaN" in err


# -- CLI values are checked before any work ---------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--checkpoint-every", "-5"], "training.checkpoint_every must be a duration"),
    (["--checkpoint-every", "0", "--resume"], "no checkpoint at"),
    (["--resume"], "--resume needs --checkpoint-every"),
    (["--checkpoint-dir", "x"], "training.checkpoint_dir needs training.checkpoint_every"),
])
def test_checkpoint_options_are_validated(events, tmp_path, cli, args, message):
    base = [a for a in TRAIN_ARGS if a not in ("--checkpoint-every", "0")]
    code, _, err = cli(["train", events, "--out", tmp_path / "m", *base, *args])
    assert code == 2 and message in err and err.count("\n") == 1


def test_resume_with_other_options_is_refused(events, tmp_path, cli, monkeypatch):
    out, checkpoints = tmp_path / "m", tmp_path / "ck"
    one_epoch = [*TRAIN_ARGS, "--epochs", "1", "--checkpoint-dir", checkpoints]  # last one wins
    monkeypatch.setattr(CheckpointManager, "clear", lambda self: None)  # keep it after the run
    assert cli(["train", events, "--out", out, *one_epoch])[0] == 0
    assert (checkpoints / FILENAME).is_file()
    code, _, err = cli(["train", events, "--out", out, *one_epoch, "--lr", "0.5", "--resume"])
    assert code == 2 and "training.lr=" in err and "but this run has 0.5" in err
    code, _, err = cli(["train", events, "--out", out, *one_epoch, "--window", "2", "--resume"])
    assert code == 2 and "different data" in err
    code, _, err = cli(["train", events, "--out", out, *one_epoch, "--resume"])
    assert code == 0, err  # same options: resumes (nothing left to train) and writes the bundle
    assert json.loads((out / MANIFEST).read_text())["stats"]["epochs_run"] == 1


def test_out_that_is_not_a_bundle_fails_before_training(events, tmp_path, cli):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not overwrite")
    started = time.monotonic()
    code, _, err = cli(["train", events, "--out", out, *TRAIN_ARGS])
    assert code == 2 and "is not an itemvec bundle" in err
    assert time.monotonic() - started < 5 and (out / "thesis.tex").read_text() == "do not overwrite"


# -- full disk: one line naming the path and the space needed, the old bundle intact --------------
def _safetensor_error(message: str) -> Exception:
    from safetensors import SafetensorError

    return SafetensorError(message)


@pytest.mark.parametrize("target,failure", [
    ("itemvec.store.bundle.np.save", lambda: OSError("52416 requested and 13280 written")),
    ("itemvec.store.bundle.pl.DataFrame.write_parquet",
     lambda: pl.exceptions.ComputeError("No space left on device (os error 28)")),
    ("safetensors.torch.save_file",
     lambda: _safetensor_error("Error while serializing: IoError(No space left on device)")),
])
def test_a_full_disk_is_one_line_naming_path_and_size(old_bundle, tmp_path, cli, monkeypatch,
                                                      target, failure):
    events = write(generate(400, 30, n_categories=3, seed=5), tmp_path / "small.csv")[0]
    before = _digest(old_bundle)

    def full(*args, **kwargs):
        raise failure()

    monkeypatch.setattr(target, full)
    code, _, err = cli(["train", events, "--out", old_bundle, *TRAIN_ARGS[:6], "--epochs", "1",
                        "--dim", "8", "--device", "cpu", "-q"])
    assert code == 2 and err.count("\n") == 1, err
    assert f"{old_bundle}: no space left on device" in err and "needs about" in err
    assert _digest(old_bundle) == before
    assert not [p for p in old_bundle.parent.iterdir() if p.name.startswith(".model")]


def test_a_full_disk_during_export_names_the_file(old_bundle, tmp_path, cli, monkeypatch):
    monkeypatch.setattr("itemvec.util.files.os.fdopen",
                        lambda fd, mode: _FullFile(fd))
    code, _, err = cli(["export", old_bundle, "--out", tmp_path / "vectors.parquet"])
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'vectors.parquet'}: no space left on device" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vectors")]


class _FullFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)

    def fileno(self) -> int:
        return self.fd

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")


def test_unwritable_out_fails_before_reading_or_training(events, tmp_path, cli, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    def never(*args, **kwargs):
        raise AssertionError("events were read before --out was checked")

    monkeypatch.setattr("itemvec.util.files.tempfile.mkstemp", denied)  # root ignores chmod
    monkeypatch.setattr("itemvec.train.pipeline.read_events", never)
    code, _, err = cli(["train", events, "--out", tmp_path / "ro" / "model", *TRAIN_ARGS])
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot write in" in err and "Permission denied" in err
    assert not (tmp_path / "ro").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_directory_fails_before_training(events, tmp_path, cli):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o555)
    code, _, err = cli(["train", events, "--out", parent / "model", *TRAIN_ARGS])
    assert code == 2 and "cannot write in" in err


def test_truncated_parquet_is_one_line_under_streaming_auto(events, tmp_path, cli):
    whole = tmp_path / "events.parquet"
    pl.read_csv(events).write_parquet(whole)
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for mode in ("auto", "off"):
        code, _, err = cli(["train", whole, "--out", tmp_path / "model", *TRAIN_ARGS,
                            "--streaming", mode])
        assert code == 2 and err.count("\n") == 1, err
        assert f"{whole}: cannot" in err and "Traceback" not in err
