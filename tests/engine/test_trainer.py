import dataclasses
import itertools
import math
from types import SimpleNamespace

import numpy as np
import psutil
import pytest

from engine import checkpoint
from engine.memory import ARENA_MARGIN, TRAINING_SHARE, NotEnoughMemory, check_memory, memory_needed
from engine.model import activation_bytes
from engine.optim import lr_at
from engine.trainer import Trainer
from tests.engine.conftest import tiny_configs


def test_tiny_preset_learns_a_short_text(verse_corpus, one_thread):
    assert len(verse_corpus.text) == 200
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=200, warmup_iters=20)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    losses = [m.loss for m in trainer.run()]
    assert losses[0] > 2.5
    assert losses[-1] < 0.2


def test_same_seed_and_one_thread_give_bit_identical_losses(verse_corpus, one_thread):
    def run() -> list[float]:
        model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=30, batch_size=8)
        return [m.loss for m in Trainer(model_cfg, train_cfg, verse_corpus).run()]

    first, second = run(), run()
    assert first == second
    assert len(set(first)) > 1


def test_evaluation_does_not_change_the_training_batches(verse_corpus, one_thread):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=10, batch_size=4)
    plain = Trainer(model_cfg, train_cfg, verse_corpus)
    plain_losses = [plain.step().loss for _ in range(10)]
    probed = Trainer(model_cfg, train_cfg, verse_corpus)
    probed_losses = []
    for _ in range(10):
        probed_losses.append(probed.step().loss)
        probed.evaluate(iters=2)
    assert probed_losses == plain_losses


def test_metrics_describe_the_step(verse_corpus, one_thread):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=5, batch_size=4, warmup_iters=2)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    m = trainer.step()
    assert m.iteration == 1 and m.lr == pytest.approx(train_cfg.lr / 2)
    assert m.step_s > 0 and m.tokens_s > 0 and m.grad_norm > 0
    assert m.arena_in_use > 0 and m.arena_reserved >= m.arena_in_use


def test_training_on_past_the_end_is_resuming_with_a_larger_total(verse_corpus, one_thread, tmp_path):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=10, batch_size=4, warmup_iters=2)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    list(trainer.run())
    path = checkpoint.save(trainer, tmp_path / "at10.safetensors")
    with pytest.raises(ValueError, match="must be larger"):
        trainer.extend(10)
    trainer.extend(25)
    extended = [(m.loss, m.lr) for m in trainer.run()]
    resumed, _ = checkpoint.restore(path, verse_corpus, train_overrides={"max_iters": 25})
    assert extended == [(m.loss, m.lr) for m in resumed.run()]  # bit for bit, one thread
    assert len(extended) == 15 and trainer.finished and extended[0][1] > train_cfg.min_lr


def test_learning_rate_warms_up_then_decays_to_min(verse_corpus):
    _, cfg = tiny_configs(verse_corpus, max_iters=1000, warmup_iters=100, lr=1e-3, min_lr=1e-4)
    assert lr_at(0, cfg) == pytest.approx(1e-5)
    assert lr_at(99, cfg) == pytest.approx(1e-3)
    mid = lr_at(550, cfg)
    assert mid == pytest.approx(0.55e-3, rel=1e-6)
    assert lr_at(999, cfg) == pytest.approx(1e-4, rel=1e-3)
    lrs = [lr_at(i, cfg) for i in range(100, 1000)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_evaluate_and_generate(verse_corpus, one_thread):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=5, batch_size=4)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    val = trainer.evaluate()
    assert math.isfinite(val) and trainer.best_val_loss == val
    text = trainer.generate("To be", 40, temperature=0.8, top_k=5, seed=3)
    assert len(text) == 40 and set(text) <= set(verse_corpus.tokenizer.chars)
    assert text == trainer.generate("To be", 40, temperature=0.8, top_k=5, seed=3)
    assert trainer.arena_stats().in_use == 0


def test_a_temperature_near_zero_samples_greedily_instead_of_overflowing(verse_corpus, one_thread):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=5, batch_size=4)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    greedy = trainer.generate("To be", 30, temperature=1e-30, seed=1)
    # logits / 5e-324 overflow float64; the model's weights are fine
    assert trainer.generate("To be", 30, temperature=5e-324, seed=2) == greedy


def test_adamw_moves_weights_against_the_gradient_and_decays_only_matrices(verse_corpus, one_thread):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=5, batch_size=4, weight_decay=0.5)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    model = trainer.model
    before = model.flat.copy()
    model.grad_flat.fill(0.0)  # a zero gradient: only decay moves anything
    trainer.optimizer.step(lr=0.1)
    n = model.n_decay
    np.testing.assert_allclose(model.flat[:n], before[:n] * (1 - 0.1 * 0.5), rtol=1e-6)
    np.testing.assert_array_equal(model.flat[n:], before[n:])
    model.grad_flat.fill(1.0)
    model.flat[...] = 0.0
    trainer.optimizer.step(lr=0.1)
    assert (model.flat < 0).all()


def test_a_batch_too_big_for_the_memory_is_refused_with_one_that_fits(verse_corpus, monkeypatch):
    model_cfg, train_cfg = tiny_configs(verse_corpus)
    big = dataclasses.replace(train_cfg, batch_size=1000)
    # what training can have is a share of what is available: the rest is the system's
    available = math.ceil((memory_needed(model_cfg, big) - 1) / TRAINING_SHARE)
    with pytest.raises(
        NotEnoughMemory, match=r"batch 1,000 needs about .* lower the batch size to 999 or less"
    ):
        check_memory(model_cfg, big, available)
    check_memory(model_cfg, dataclasses.replace(train_cfg, batch_size=999), available)
    with pytest.raises(NotEnoughMemory, match=r"can spare .* \(90% of the .* available\)"):
        check_memory(model_cfg, big, memory_needed(model_cfg, big))
    with pytest.raises(NotEnoughMemory, match="choose a smaller model"):
        check_memory(model_cfg, big, memory_needed(model_cfg, big, batch_size=0))
    # the activations it counts are the arena's, which never outgrows them by more than the margin
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    trainer.step()
    assert trainer.arena_stats().high_water <= ARENA_MARGIN * activation_bytes(
        model_cfg, train_cfg.batch_size
    )
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=10**6))
    with pytest.raises(NotEnoughMemory):  # before anything is allocated
        Trainer(model_cfg, train_cfg, verse_corpus)


def test_a_failed_step_leaves_the_run_as_it_was(verse_corpus, one_thread):
    model_cfg, train_cfg = tiny_configs(verse_corpus, batch_size=4)
    straight = Trainer(model_cfg, train_cfg, verse_corpus)
    losses = [straight.step().loss for _ in range(4)]
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    trainer.step()
    trainer.step()
    passes = trainer._passes
    real = passes.loss_and_grads

    def starved(x, y):
        real(x, y)  # the arena full of this step's work, as when memory runs out late in it
        raise MemoryError("Unable to allocate 3.1 GiB")

    passes.loss_and_grads = starved
    with pytest.raises(MemoryError):
        trainer.step()
    passes.loss_and_grads = real
    assert trainer.iteration == 2 and trainer.arena_stats().in_use == 0
    assert [trainer.step().loss for _ in range(2)] == losses[2:]  # the same batches, bit for bit


def test_a_loss_is_worse_than_a_guess_only_when_it_settles_above_ln_vocab_by_the_margin():
    from engine.trainer import NOT_LEARNING_MARGIN, NOT_LEARNING_WINDOW, worse_than_a_guess

    guess = math.log(65)  # 4.17
    above = [guess * NOT_LEARNING_MARGIN * 1.01] * NOT_LEARNING_WINDOW
    assert worse_than_a_guess(above, 65) == pytest.approx(above[0])
    assert worse_than_a_guess(above[1:], 65) is None  # too few yet
    assert worse_than_a_guess([guess] * NOT_LEARNING_WINDOW, 65) is None  # a text with little to learn
    assert worse_than_a_guess([9.0] * 50 + [1.0] * NOT_LEARNING_WINDOW, 65) is None  # settled since
    assert worse_than_a_guess([*above[1:], math.nan], 65) is None  # told otherwise
    assert worse_than_a_guess(above, 1) is None  # one character: no guess to beat
