import numpy as np

from engine.arena import ALIGN, MIN_CHUNK, Arena
from engine.trainer import Trainer
from tests.engine.conftest import tiny_configs


def test_alloc_returns_aligned_views_of_the_requested_shape():
    arena = Arena()
    a = arena.alloc((3, 5), np.float32)
    b = arena.alloc(7, np.float64)
    assert a.shape == (3, 5) and a.dtype == np.float32
    assert b.shape == (7,) and b.dtype == np.float64
    assert a.ctypes.data % ALIGN == 0 and b.ctypes.data % ALIGN == 0
    a.fill(1.0)
    b.fill(2.0)
    assert (a == 1.0).all()  # no overlap


def test_zeros_is_zeroed_even_after_reuse():
    arena = Arena()
    arena.alloc(100).fill(5.0)
    arena.reset()
    assert (arena.zeros(100) == 0).all()


def test_several_chunks_coalesce_into_one_of_the_high_water_size():
    arena = Arena()
    for _ in range(5):
        arena.alloc(400_000, np.float32)  # 1.6 MB each: more than one chunk
    assert arena.stats().chunks > 1
    used = arena.in_use
    arena.reset()
    stats = arena.stats()
    assert stats.chunks == 1 and stats.reserved >= used and stats.in_use == 0
    for _ in range(5):
        arena.alloc(400_000, np.float32)
    assert arena.stats().chunks == 1


def test_debug_mode_poisons_a_view_kept_past_reset():
    arena = Arena(debug=True)
    kept = arena.alloc(16, np.float32)
    kept.fill(3.0)
    arena.reset()
    assert np.isnan(kept).all()


def test_training_memory_is_flat_in_steady_state(verse_corpus, one_thread):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=201, batch_size=4)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    trainer.step()  # the first iteration sizes the arena
    first = trainer.arena_stats()
    for _ in range(200):
        m = trainer.step()
        assert trainer.arena_stats().in_use == 0
        assert m.arena_reserved == first.reserved and m.arena_chunks == first.chunks == 1


def test_a_trainer_in_debug_mode_keeps_no_view_past_reset(verse_corpus, one_thread):
    """Debug mode poisons reset memory: NaN would reach the loss if a view outlived its iteration."""
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=20, batch_size=4)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus, arena_debug=True)
    losses = [m.loss for m in trainer.run()]
    assert np.isfinite(losses).all()
    assert np.isfinite(trainer.model.flat).all()


def test_free_gives_every_chunk_back_and_sizes_anew():
    arena = Arena()
    arena.alloc(3 << 20)
    arena.reset()
    arena.free()
    assert arena.stats().reserved == 0 and arena.stats().high_water == 0
    arena.alloc(1 << 10)
    arena.reset()
    assert arena.stats().reserved == MIN_CHUNK  # the new need, not the old one
