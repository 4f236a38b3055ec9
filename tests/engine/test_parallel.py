import os
import signal
import time

import numpy as np
import psutil
import pytest

from engine import parallel
from engine.arena import Arena
from engine.blas import get_blas_threads, set_blas_threads
from engine.config import PRESETS, ModelConfig
from engine.model import GPT
from engine.optim import AdamW
from engine.parallel import ShardedStep, ShardError, ThreadPlan, TrainingBuffers, plan_threads, shards_for
from engine.session import TrainingSession
from engine.trainer import Trainer
from tests.engine.conftest import tiny_configs


def _model(cfg: ModelConfig, dtype: type = np.float32) -> tuple[GPT, AdamW, TrainingBuffers]:
    """A model and its optimizer in shared buffers, as the trainer builds them."""
    buffers = TrainingBuffers(cfg.n_params, dtype)
    model = GPT(cfg, dtype, flat=buffers.params, grad_flat=buffers.grads)
    model.init_weights(np.random.default_rng(0))
    return model, AdamW(buffers.params, buffers.grads, model.n_decay, moments=(buffers.m, buffers.v)), buffers


@pytest.mark.parametrize("shards", [2, 3])
def test_a_split_batch_gives_the_loss_gradients_norm_and_update_of_the_whole(shards):
    # Over 3 update chunks of parameters, so that every process updates a range of its own.
    cfg = ModelConfig(vocab_size=11, d_model=144, n_heads=2, n_layers=2, d_ff=576, context=8)
    assert cfg.n_params > 3 * AdamW.CHUNK
    model, optimizer, buffers = _model(cfg, np.float64)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 11, size=(5, 8)), rng.integers(0, 11, size=(5, 8))  # 5 rows: uneven shards
    whole = ShardedStep(model, optimizer, Arena())
    loss = whole.loss_and_grads(x, y)
    norm = whole.grad_norm()
    grads = model.grad_flat.copy()
    split = ShardedStep(model, optimizer, Arena(), shards, buffers)
    assert split.loss_and_grads(x, y) == pytest.approx(loss, rel=1e-12)
    assert split.grad_norm() == pytest.approx(norm, rel=1e-12)
    np.testing.assert_allclose(model.grad_flat, grads, rtol=1e-10, atol=1e-14)
    assert split.arena_stats().in_use > split.arena.stats().in_use  # the helpers' arenas count too
    split.reset()
    assert split.arena_stats().in_use == 0
    assert split.loss(x, y) == pytest.approx(loss, rel=1e-12)  # evaluation: forward passes only
    assert split.arena_stats().in_use == 0

    # The update, each process on its range of the parameters, is the update on one, bit for bit.
    start = buffers.params.copy()
    results = []
    for step in (whole, split):
        buffers.params[...], buffers.m[...], buffers.v[...], optimizer.t = start, 0, 0, 0
        for _ in range(2):
            buffers.grads[...] = grads
            step.update(1e-2, grad_scale=0.5)
        results.append(buffers.params.copy())
    np.testing.assert_array_equal(*results)
    assert not np.array_equal(results[0], start)
    split.close()


def test_a_split_batch_needs_the_shared_buffers():
    model, optimizer, _ = _model(
        ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, d_ff=32, context=8)
    )
    with pytest.raises(ValueError, match="TrainingBuffers"):
        ShardedStep(model, optimizer, Arena(), 2)


def test_only_batches_worth_the_hand_offs_are_split():
    assert shards_for(PRESETS["tiny"].model_for(65), 32, 2) == 1
    assert shards_for(PRESETS["small"].model_for(65), 16, 2) == 2
    assert shards_for(PRESETS["small"].model_for(65), 1, 2) == 1
    assert shards_for(PRESETS["small"].model_for(65), 16, 1) == 1


def test_the_update_runs_on_all_threads_for_big_models_only():
    small, large = PRESETS["small"].model_for(65), PRESETS["large"].model_for(65)
    assert plan_threads(small, 16, 2) == ThreadPlan(shards=2, blas=1, update=1)
    assert plan_threads(small, 1, 2) == ThreadPlan(shards=1, blas=2, update=1)
    assert plan_threads(large, 1, 2) == ThreadPlan(shards=1, blas=2, update=2)
    assert plan_threads(large, 16, 1) == ThreadPlan(shards=1, blas=1, update=1)
    assert plan_threads(large, 16, 2) == ThreadPlan(shards=2, blas=1, update=1)  # a range each
    assert plan_threads(large, 16, 2, split=False) == ThreadPlan(shards=1, blas=2, update=2)


def test_a_trainer_on_two_threads_trains_and_is_deterministic(verse_corpus):
    model_cfg = ModelConfig(
        vocab_size=verse_corpus.vocab_size, d_model=96, n_heads=2, n_layers=2, d_ff=384, context=32
    )
    _, train_cfg = tiny_configs(verse_corpus, max_iters=10, batch_size=16)

    def run() -> list[float]:
        trainer = Trainer(model_cfg, train_cfg, verse_corpus)
        assert trainer.set_threads(2) == 2
        assert trainer.threads == 2
        losses = [trainer.step().loss for _ in range(10)]
        trainer.set_threads(1)
        return losses

    first = run()
    assert first == run()
    assert first[-1] < first[0]


def test_splitting_the_batch_gives_back_what_the_whole_batch_took(verse_corpus):
    """Auto times one thread (the whole batch here) before two (half each): the arena sized
    for the whole would otherwise stay, unused, for the rest of the run."""
    model_cfg = ModelConfig(
        vocab_size=verse_corpus.vocab_size, d_model=96, n_heads=2, n_layers=2, d_ff=384, context=32
    )
    _, train_cfg = tiny_configs(verse_corpus, max_iters=10, batch_size=16)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    try:
        trainer.set_threads(1)
        for _ in range(2):  # the first sizes the arena in chunks, the second in one
            trainer.step()
        whole = trainer.arena.stats().reserved
        assert trainer.set_threads(2) == 2 and len(trainer.helper_pids) == 1
        for _ in range(2):
            trainer.step()
        assert trainer.arena.stats().reserved < 0.6 * whole  # this process's half
        assert trainer.arena_stats().reserved < 1.1 * whole  # both halves together
        trainer.set_threads(1)
        for _ in range(2):
            trainer.step()
        assert trainer.arena.stats().reserved == whole
        trainer.close()  # done training: nothing held for passes to come
        assert trainer.arena.stats().reserved == 0 and trainer.helper_pids == []
    finally:
        trainer.close()
        set_blas_threads(1)


def _split_model() -> ShardedStep:
    cfg = ModelConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, d_ff=32, context=8)
    model, optimizer, buffers = _model(cfg)
    return ShardedStep(model, optimizer, Arena(), 2, buffers)


def test_a_failing_helper_is_reported_and_the_next_pass_still_works():
    split = _split_model()
    x = np.zeros((4, 8), dtype=np.int64)
    bad = x.copy()
    bad[2:] = 99  # out of the vocabulary, in the helper's half only
    with pytest.raises(ShardError, match=r"helper process failed.*IndexError"):
        split.loss_and_grads(bad, x)
    split.reset()
    assert np.isfinite(split.loss_and_grads(x, x))
    split.close()


def test_helpers_ignore_ctrl_c_and_stop_when_closed_or_orphaned():
    split = _split_model()
    x = np.zeros((4, 8), dtype=np.int64)
    (helper,) = split._helpers
    assert np.isfinite(split.loss(x, x))
    os.kill(helper._process.pid, signal.SIGINT)
    time.sleep(0.2)
    assert np.isfinite(split.loss(x, x))
    split.close()
    assert helper._process.poll() is not None

    # A helper whose training process has gone (its socket closed) ends by itself.
    split = _split_model()
    (helper,) = split._helpers
    helper._conn.close()
    assert helper._process.wait(timeout=10) == 0
    split.close()


def test_where_helper_processes_cannot_start_the_trainer_uses_blas_threads(verse_corpus, monkeypatch):
    def refuse(*args: object) -> None:
        raise ShardError("no processes here")

    monkeypatch.setattr(parallel, "_Helper", refuse)
    model_cfg = ModelConfig(
        vocab_size=verse_corpus.vocab_size, d_model=96, n_heads=2, n_layers=2, d_ff=384, context=32
    )
    _, train_cfg = tiny_configs(verse_corpus, max_iters=2, batch_size=16)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    try:
        assert trainer.set_threads(2) == get_blas_threads() == 2
        assert np.isfinite(trainer.step().loss)
    finally:
        trainer.set_threads(1)


def test_without_split_two_threads_start_no_helper(verse_corpus):
    """A model only to sample from (too big to train here) has no use for helpers."""
    model_cfg = ModelConfig(
        vocab_size=verse_corpus.vocab_size, d_model=96, n_heads=2, n_layers=2, d_ff=384, context=32
    )
    _, train_cfg = tiny_configs(verse_corpus, max_iters=2, batch_size=16)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    try:
        assert trainer.set_threads(2, split=False) == get_blas_threads() == 2
        assert trainer.helper_pids == []
        assert trainer.set_threads(2) == 2 and len(trainer.helper_pids) == 1  # splitting, it would
    finally:
        trainer.close()
        set_blas_threads(1)


def test_the_memory_a_session_records_includes_the_helper_processes(verse_corpus):
    model_cfg = ModelConfig(
        vocab_size=verse_corpus.vocab_size, d_model=96, n_heads=2, n_layers=2, d_ff=384, context=32
    )
    _, train_cfg = tiny_configs(verse_corpus, max_iters=2, batch_size=16)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    session = TrainingSession(trainer)
    try:
        trainer.set_threads(2)
        (pid,) = trainer.helper_pids
        rss = session.step().record["rss"]
        own = psutil.Process().memory_info().rss
        assert rss >= own + psutil.Process(pid).memory_info().rss // 2
        assert trainer.arena_stats().high_water > trainer.arena.stats().high_water  # the helper's too
    finally:
        trainer.close()
        set_blas_threads(1)
    assert trainer.helper_pids == []
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)  # as the system's out-of-memory killer would
    psutil.Process(pid).wait(timeout=10)


@pytest.mark.parametrize(
    ("moment", "request_kind"),
    [
        ("between steps", None),
        ("before the update", "update"),  # after the gradients are summed: this step must not count twice
        ("during the update", "update"),  # its request sent, never answered: updated here, once
        ("in an evaluation", "eval"),
    ],
)
def test_a_helper_killed_mid_run_is_replaced_and_the_run_goes_on_unchanged(
    verse_corpus, monkeypatch, moment, request_kind
):
    model_cfg = ModelConfig(
        vocab_size=verse_corpus.vocab_size, d_model=96, n_heads=2, n_layers=2, d_ff=384, context=32
    )
    _, train_cfg = tiny_configs(verse_corpus, max_iters=10, batch_size=16, eval_interval=3, eval_iters=2)
    send = parallel._Helper.send
    armed = []

    def send_and_kill(helper: parallel._Helper, kind: str, *args: object) -> None:
        if armed and kind == request_kind:
            armed.clear()
            if moment == "during the update":
                os.kill(helper.pid, signal.SIGSTOP)  # it will not read the request before it dies
                send(helper, kind, *args)
            _kill(helper.pid)
        send(helper, kind, *args)

    monkeypatch.setattr(parallel._Helper, "send", send_and_kill)

    def run(kill_in: int | None) -> tuple[list[dict], list[tuple[str, ...]], np.ndarray, int]:
        session = TrainingSession(Trainer(model_cfg, train_cfg, verse_corpus))
        trainer = session.trainer
        trainer.set_threads(2)
        records, warnings = [], []
        try:
            for i in range(4):
                if i == kill_in:
                    if request_kind is None:
                        _kill(trainer.helper_pids[0])
                    else:
                        armed.append(True)
                report = session.step()
                records.append({k: report.record.get(k) for k in ("iter", "loss", "val_loss")})
                warnings.append(report.warnings)
            assert not armed and len(trainer.helper_pids) == 1
            return records, warnings, trainer.model.flat.copy(), trainer.optimizer.t
        finally:
            trainer.close()
            set_blas_threads(1)

    straight, _, params, steps = run(None)
    records, warnings, params_after, steps_after = run(2)
    assert records == straight  # validation at iteration 3 included
    np.testing.assert_array_equal(params_after, params)
    assert steps_after == steps == 4
    [warning] = [w for step in warnings for w in step]
    assert warning.startswith("a training helper process") and warning.endswith(", and new helpers took over")


def test_without_posix_the_buffers_are_ordinary_memory(monkeypatch):
    monkeypatch.setattr(parallel.os, "name", "nt")  # no descriptor inheritance, no helpers
    buffers = TrainingBuffers(100, np.float32)
    arrays = (buffers.params, buffers.grads, buffers.m, buffers.v)
    assert all(a.shape == (100,) and not a.any() for a in arrays)
    buffers.params += 1
    assert not buffers.grads.any()
    with pytest.raises(ShardError, match="POSIX"):
        _ = buffers.fd
