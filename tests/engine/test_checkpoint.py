import errno
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import safetensors
import safetensors.numpy

from engine import checkpoint
from engine.checkpoint import CheckpointError
from engine.config import PRESETS
from engine.data import Corpus, CorpusError
from engine.memory import NotEnoughMemory
from engine.trainer import Trainer
from tests.engine.conftest import VERSE, tiny_configs

ROOT = Path(__file__).resolve().parents[2]


def tiny_trainer(corpus: Corpus, **overrides) -> Trainer:
    model_cfg, train_cfg = tiny_configs(corpus, **({"max_iters": 12, "batch_size": 4} | overrides))
    return Trainer(model_cfg, train_cfg, corpus)


@pytest.fixture
def saved(tmp_path, verse_corpus, one_thread) -> Path:
    trainer = tiny_trainer(verse_corpus)
    for _ in range(3):
        trainer.step()
    return checkpoint.save(trainer, tmp_path / "ckpt.safetensors")


def rewrite(src: Path, dst: Path, *, tensors=None, meta=None) -> Path:
    """Copy a checkpoint, changing its tensors and/or its metadata on the way."""
    with safetensors.safe_open(src, "np") as f:
        header = f.metadata()
    data = safetensors.numpy.load_file(src)
    m = json.loads(header["chargpt"])
    if tensors:
        tensors(data)
    if meta:
        meta(m)
    safetensors.numpy.save_file(data, dst, metadata={"chargpt": json.dumps(m)})
    return dst


# -- round trip and resume -------------------------------------------------------
def test_a_checkpoint_holds_parameters_moments_and_metadata(saved, verse_corpus):
    ckpt = checkpoint.load(saved)
    assert ckpt.iteration == 3 and ckpt.vocabulary == verse_corpus.tokenizer.chars
    names = [name for name, _ in ckpt.model_cfg.param_shapes()]
    assert set(ckpt.tensors) == {*names, *(f"optim.m.{n}" for n in names), *(f"optim.v.{n}" for n in names)}
    meta = ckpt.metadata
    assert meta["format"] == "chargpt-checkpoint" and meta["version"] == checkpoint.VERSION
    assert meta["optimizer_step"] == 3 and meta["rng"]["data"]["bit_generator"] == "PCG64"
    assert meta["corpus"] == {"name": "verse", "path": None, "sha256": verse_corpus.sha256, "characters": 200}
    assert meta["app_version"] and meta["created"] and meta["best_val_loss"] is None
    assert np.any(ckpt.tensors["optim.v.wte"] > 0)


def test_resume_in_a_fresh_process_is_bit_exact(tmp_path, verse_corpus, one_thread):
    n, k = 16, 7
    straight = tiny_trainer(verse_corpus, max_iters=n)
    straight_losses = [straight.step().loss for _ in range(n)]

    first = tiny_trainer(verse_corpus, max_iters=n)
    losses = [first.step().loss for _ in range(k)]
    first.evaluate(iters=2)  # evaluating before the save must not matter either
    checkpoint.save(first, tmp_path / "k.safetensors")
    script = textwrap.dedent(
        f"""
        import json, sys
        from engine.blas import set_blas_threads
        from engine import checkpoint
        from engine.data import Corpus
        from tests.engine.conftest import VERSE
        set_blas_threads(1)
        trainer, warnings = checkpoint.restore(sys.argv[1], Corpus(VERSE, "verse"))
        assert not warnings, warnings
        losses = [float(trainer.step().loss) for _ in range({n - k})]
        checkpoint.save(trainer, sys.argv[2])
        print(json.dumps(losses))
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "k.safetensors"), str(tmp_path / "n.safetensors")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    losses += json.loads(r.stdout)
    assert losses == straight_losses
    resumed = checkpoint.load(tmp_path / "n.safetensors")
    for name, value in straight.state_tensors().items():
        np.testing.assert_array_equal(resumed.tensors[name], value, err_msg=name)
    assert resumed.metadata["rng"]["data"] == straight.data_rng.bit_generator.state


def test_restore_brings_back_best_val_loss_and_longer_totals(saved, verse_corpus):
    trainer, _ = checkpoint.restore(saved, verse_corpus)
    assert trainer.iteration == 3 and trainer.optimizer.state()["t"] == 3
    trainer.evaluate(iters=2)
    path = checkpoint.save(trainer, saved.with_name("b.safetensors"))
    again, _ = checkpoint.restore(path, verse_corpus, train_overrides={"max_iters": 40})
    assert again.best_val_loss == trainer.best_val_loss and again.train_cfg.max_iters == 40
    with pytest.raises(CheckpointError, match="lr cannot change when resuming"):
        checkpoint.restore(path, verse_corpus, train_overrides={"lr": 1.0})


# -- atomic saves ------------------------------------------------------------------
def _only_the_earlier_file_remains(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_save_into_a_read_only_folder_fails_cleanly(saved, verse_corpus, monkeypatch):
    before = saved.read_bytes()

    def refuse(*args, **kwargs):  # what mkstemp meets in a folder without write permission
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointError, match="no permission to write in that folder") as e:
        checkpoint.save(tiny_trainer(verse_corpus), saved)
    assert str(saved) in str(e.value) and "\n" not in str(e.value)
    _only_the_earlier_file_remains(saved, before)


def test_a_save_below_a_file_says_the_file_is_in_the_way(tmp_path):
    (tmp_path / "notes").write_text("x")
    with pytest.raises(CheckpointError, match="is not a folder") as e:
        checkpoint.write_atomic(tmp_path / "notes" / "c.safetensors", b"data")
    assert str(tmp_path / "notes") in str(e.value) and (tmp_path / "notes").read_text() == "x"


class HalfWriter:
    """A file whose write stops halfway through with a full disk."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def fileno(self):
        return self.f.fileno()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_save_that_fails_midway_leaves_the_earlier_file_and_no_temp_file(saved, verse_corpus, monkeypatch):
    before = saved.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError, match="the disk is full"):
        checkpoint.save(tiny_trainer(verse_corpus), saved)
    _only_the_earlier_file_remains(saved, before)


def test_resuming_takes_away_what_a_write_killed_half_way_left_in_the_runs_checkpoints(
    saved, verse_corpus, tmp_path
):
    """kill -9 during a save left a hidden temp file (230 MB for large) that nothing removed."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    path = shutil.copy(saved, folder / "iter_000280.safetensors")
    stale = folder / ".iter_000290.safetensors.k2x_9qa1.tmp"  # the process died writing it
    live = folder / ".best.safetensors.a1b2c3d4.tmp"  # another process writing now
    other = folder / ".notes.tmp"  # not a name of ours
    for f in (stale, live, other):
        f.write_bytes(b"partial")
    hour_ago = stale.stat().st_mtime - 3600
    for f in (stale, other):
        os.utime(f, (hour_ago, hour_ago))
    checkpoint.restore(path, verse_corpus)
    assert not stale.exists() and live.exists() and other.exists()
    # a checkpoint kept in a folder of the person's own: what lies beside it is left alone
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    sent = shutil.copy(saved, downloads / "model.safetensors")
    theirs = downloads / ".model.safetensors.abcdefgh.tmp"
    theirs.write_bytes(b"partial")
    os.utime(theirs, (hour_ago, hour_ago))
    checkpoint.restore(sent, verse_corpus)
    assert theirs.exists()


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failing_fsync_or_rename_leaves_the_earlier_file(saved, verse_corpus, monkeypatch, failing):
    before = saved.read_bytes()

    def fail(*args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint.os, failing, fail)
    with pytest.raises(CheckpointError, match="Input/output error"):
        checkpoint.save(tiny_trainer(verse_corpus), saved)
    _only_the_earlier_file_remains(saved, before)


def test_a_save_into_a_missing_folder_says_so(tmp_path, verse_corpus):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.save(tiny_trainer(verse_corpus), tmp_path / "gone" / "c.safetensors")


# -- bad files -----------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.5, 40 / 473_000])  # cut in the tensors, cut in the header
def test_a_truncated_checkpoint_is_named_truncated(saved, tmp_path, keep):
    data = saved.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: max(12, int(len(data) * keep))])
    with pytest.raises(CheckpointError, match=r"cut.safetensors is truncated"):
        checkpoint.load(cut)


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(5000), b"hello\n", b""])
def test_random_bytes_are_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        checkpoint.load(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "nope.safetensors")


def test_another_presets_checkpoint_does_not_load_against_a_disagreeing_config(tmp_path, verse_corpus):
    small = PRESETS["small"]
    trainer = Trainer(small.model_for(verse_corpus.vocab_size), replace(small.train), verse_corpus)
    path = checkpoint.save(trainer, tmp_path / "small.safetensors")
    tiny_cfg, _ = tiny_configs(verse_corpus)
    with pytest.raises(CheckpointError, match=r"is a 2-layer × 128 .* not the expected 1-layer × 64"):
        checkpoint.load(path, tiny_cfg)
    # and a file whose metadata claims the tiny config over the small preset's tensors
    lying = rewrite(path, tmp_path / "lying.safetensors", meta=lambda m: m.update(model=tiny_cfg.to_dict()))
    with pytest.raises(CheckpointError, match=r"tensor \S+ has shape \(\d+, 128\), but its config needs"):
        checkpoint.load(lying)


def test_missing_tensors_are_named(saved, tmp_path):
    path = rewrite(saved, tmp_path / "short.safetensors", tensors=lambda t: t.pop("optim.v.wpe"))
    with pytest.raises(CheckpointError, match=r"lacks tensor optim.v.wpe"):
        checkpoint.load(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_are_refused(saved, tmp_path, value):
    def poison(t):
        t["h.0.mlp.c_fc.weight"][3, 5] = value

    path = rewrite(saved, tmp_path / "nan.safetensors", tensors=poison)
    with pytest.raises(CheckpointError, match=r"h.0.mlp.c_fc.weight holds NaN or infinite values"):
        checkpoint.load(path)


def test_a_vocabulary_of_more_than_single_characters_is_refused(saved, tmp_path):
    def double_the_first(m):
        m["vocabulary"][0] *= 2  # "\n" -> "\n\n": still sorted, unique, as many entries
        assert sorted(set(m["vocabulary"])) == m["vocabulary"]

    path = rewrite(saved, tmp_path / "vocab.safetensors", meta=double_the_first)
    with pytest.raises(CheckpointError, match=r"vocabulary .* does not fit"):
        checkpoint.load(path)


def test_a_newer_format_version_is_refused(saved, tmp_path):
    path = rewrite(saved, tmp_path / "v99.safetensors", meta=lambda m: m.update(version=99))
    with pytest.raises(CheckpointError, match="format version 99, this app reads version 1; update"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    ("change", "told"),
    [
        ({"iteration": -5}, "iteration is -5, not a count of 0 or more"),  # resumed as gradient ascent
        ({"iteration": 2.5}, "iteration is 2.5, not a count"),
        ({"iteration": "4"}, "iteration is '4', not a count"),
        ({"optimizer_step": -1}, "optimizer_step is -1, not a count"),
        ({"optimizer_step": 10**6}, "optimizer_step 1000000 is past iteration"),
        ({"best_val_loss": "low"}, "best_val_loss is 'low', not a number"),
    ],
)
def test_metadata_numbers_out_of_range_are_refused_as_damaged(saved, tmp_path, change, told):
    path = rewrite(saved, tmp_path / "odd.safetensors", meta=lambda m: m.update(change))
    with pytest.raises(
        CheckpointError, match=rf"^odd.safetensors has damaged metadata \({told}.*; use another"
    ):
        checkpoint.load(path)


def test_a_best_val_loss_of_nan_or_none_loads(saved, tmp_path):
    for best in (None, math.nan):
        path = rewrite(saved, tmp_path / "b.safetensors", meta=lambda m, b=best: m.update(best_val_loss=b))
        assert checkpoint.load(path).iteration >= 0


def test_a_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, path)
    with pytest.raises(CheckpointError, match="safetensors file but not a CharGPT checkpoint"):
        checkpoint.load(path)


# -- corpus on resume ----------------------------------------------------------------
def test_a_different_corpus_resumes_with_a_warning_and_the_checkpoints_tokenizer(saved, verse_corpus):
    other = Corpus(VERSE[::-1] + " to be", "reversed")  # same characters, other text
    subset = Corpus("to be or not to be, " * 5, "subset")  # fewer characters than the vocabulary
    for corpus in (other, subset):
        trainer, warnings = checkpoint.restore(saved, corpus)
        assert (
            len(warnings) == 1
            and "the corpus differs from the one this checkpoint was trained on" in (warnings[0])
        )
        assert trainer.corpus.tokenizer.chars == verse_corpus.tokenizer.chars
        trainer.step()
    with pytest.raises(CheckpointError, match=r"not in the model's vocabulary: 'X' 'Z'"):
        checkpoint.restore(saved, Corpus(VERSE + "XZ", "more"))


def test_a_text_too_short_to_resume_on_is_named_by_its_path_as_given(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("texts").mkdir()
    Path("texts/short.txt").write_text("to be", encoding="utf-8")  # read in the checkpoint's vocabulary
    told = r"^cannot resume on short.txt: texts/short.txt has 5 characters, fewer than the context"
    with pytest.raises(CheckpointError, match=told):
        checkpoint.restore(saved, Corpus.from_file("texts/short.txt"))


def test_the_recorded_corpus_file_is_reopened_or_asked_for(tmp_path, one_thread):
    text_file = tmp_path / "verse.txt"
    text_file.write_text(VERSE * 2, encoding="utf-8")
    path = checkpoint.save(tiny_trainer(Corpus.from_file(text_file)), tmp_path / "c.safetensors")
    trainer, warnings = checkpoint.restore(path)
    assert trainer.corpus.path == text_file.resolve() and not warnings
    text_file.unlink()
    with pytest.raises(checkpoint.CorpusNeeded, match=r"is gone \(.*verse.txt\)"):
        checkpoint.restore(path)


def test_a_checkpoint_whose_text_is_not_here_loads_to_sample_and_export_but_not_train(tmp_path, one_thread):
    """A checkpoint someone sent: the file it was trained on stayed on their machine."""
    text_file = tmp_path / "verse.txt"
    text_file.write_text(VERSE * 2, encoding="utf-8")
    path = checkpoint.save(tiny_trainer(Corpus.from_file(text_file)), tmp_path / "c.safetensors")
    text_file.unlink()
    trainer, warnings = checkpoint.restore(path, absent_text=True)
    assert not warnings and trainer.corpus.name == "verse.txt"
    assert trainer.iteration == checkpoint.load(path).iteration
    assert len(trainer.generate("to be", 20, temperature=1.0, top_k=None)) == 20
    with pytest.raises(CorpusError, match=r"verse\.txt is not on this machine"):
        trainer.step()
    with pytest.raises(CorpusError, match="not on this machine"):
        trainer.evaluate()
    # exported, it still names the text it was trained on, as the original does
    again = checkpoint.save(trainer, tmp_path / "again.safetensors")
    assert checkpoint.load(again).metadata["corpus"] == checkpoint.load(path).metadata["corpus"]
    text_file.write_text(VERSE * 2, encoding="utf-8")  # the text given back: it trains
    trainer, _ = checkpoint.restore(again)
    trainer.step()


def test_a_checkpoint_too_big_to_train_here_says_its_batch_cannot_change(saved, verse_corpus, monkeypatch):
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=10**6))
    with pytest.raises(NotEnoughMemory, match="a checkpoint keeps its batch size"):
        checkpoint.restore(saved, Corpus(VERSE, "verse"))
    # still a model to sample from and export, which needs no activations
    trainer, _ = checkpoint.restore(saved, Corpus(VERSE, "verse"), memory_check=False)
    assert trainer.iteration == checkpoint.load(saved).iteration
    assert len(trainer.generate("the ", 20, temperature=1.0, top_k=None)) == 20


def test_text_not_from_a_file_must_be_given_to_resume(saved):
    with pytest.raises(checkpoint.CorpusNeeded, match=r"not read from a file \(verse\)"):
        checkpoint.restore(saved)


# -- sampling and export -------------------------------------------------------------
def test_a_sample_from_a_trained_checkpoint_is_reproducible(saved, tmp_path):
    trainer, _ = checkpoint.restore(saved, Corpus(VERSE, "verse"))
    for _ in range(20):
        trainer.step()
    path = checkpoint.save(trainer, tmp_path / "trained.safetensors")

    def sample(seed: int) -> str:
        ckpt = checkpoint.load(path)
        return trainer_free_sample(ckpt, "To be", seed)

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    ckpt = checkpoint.load(path)
    with pytest.raises(ValueError, match=r"not in the model's vocabulary: '!' 'Q'"):
        trainer_free_sample(ckpt, "Quiet!", 7)


def trainer_free_sample(ckpt: checkpoint.Checkpoint, prompt: str, seed: int) -> str:
    from engine.trainer import generate_iter

    return "".join(generate_iter(ckpt.model(), ckpt.tokenizer(), prompt, 60, 0.8, 5, seed))


def test_exported_weights_have_pytorch_names_and_shapes(saved, tmp_path):
    out = checkpoint.export_weights(saved, tmp_path / "weights.safetensors")
    weights = safetensors.numpy.load_file(out)
    ckpt = checkpoint.load(saved)
    cfg = ckpt.model_cfg
    assert weights["transformer.wte.weight"].shape == (cfg.vocab_size, cfg.d_model)
    assert weights["transformer.wpe.weight"].shape == (cfg.context, cfg.d_model)
    assert weights["transformer.h.0.attn.c_attn.weight"].shape == (3 * cfg.d_model, cfg.d_model)
    assert weights["transformer.h.0.mlp.c_proj.weight"].shape == (cfg.d_model, cfg.d_ff)
    assert weights["transformer.ln_f.bias"].shape == (cfg.d_model,)
    assert weights["lm_head.weight"].shape == (cfg.vocab_size, cfg.d_model)
    assert len(weights) == len(cfg.param_shapes()) and not any(k.startswith("optim") for k in weights)
    np.testing.assert_array_equal(weights["transformer.h.0.ln_1.weight"], ckpt.tensors["h.0.ln_1.weight"])
    with safetensors.safe_open(out, "np") as f:
        meta = json.loads(f.metadata()["chargpt"])
    assert meta["model"] == cfg.to_dict() and meta["vocabulary"] == ckpt.vocabulary
    # what the names leave open, and nanoGPT does otherwise (it ties lm_head to wte)
    assert meta["activation"] == "gelu_tanh" and meta["lm_head"] == "untied"
    with pytest.raises(CheckpointError, match="exported weights only"):
        checkpoint.load(out)


def test_files_are_written_like_ordinary_files(saved):
    assert saved.stat().st_mode & 0o777 == 0o666 & ~checkpoint._UMASK
    shutil.copy(saved, saved.with_name("copy.safetensors"))
    assert checkpoint.load(saved.with_name("copy.safetensors")).iteration == 3


def test_the_builtin_corpus_is_recorded_as_builtin_and_reopened(tmp_path, monkeypatch, one_thread):
    from engine import default_corpus

    builtin = Corpus(VERSE, default_corpus.NAME)
    monkeypatch.setattr(default_corpus, "load_default_corpus", lambda: builtin)
    path = checkpoint.save(tiny_trainer(builtin), tmp_path / "b.safetensors")
    assert checkpoint.load(path).metadata["corpus"]["path"] == "builtin"
    trainer, warnings = checkpoint.restore(path)
    assert trainer.corpus is builtin and not warnings


def test_a_save_writes_the_tensors_from_their_own_memory(tmp_path, verse_corpus):
    """No copy of the state on the way to the file: the library's save built the whole file in
    memory, from copies of the tensors (the large preset: 450 MB more at every save)."""
    model_cfg = PRESETS["v2"].model_for(verse_corpus.vocab_size)
    _, train_cfg = tiny_configs(verse_corpus, batch_size=1)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    tracemalloc.start()
    try:
        path = checkpoint.save(trainer, tmp_path / "v2.safetensors")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 3 * 4 * model_cfg.n_params  # parameters and both moments
    assert peak < path.stat().st_size / 20
    with safetensors.safe_open(path, "np") as f:  # the library reads it, tensor for tensor
        for name, value in trainer.state_tensors().items():
            np.testing.assert_array_equal(f.get_tensor(name), value)
