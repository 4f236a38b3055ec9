from engine.blas import ThreadTuner, cpu_count, get_blas_threads, set_blas_threads
from engine.trainer import Trainer
from tests.engine.conftest import tiny_configs


def test_auto_threads_times_each_count_then_keeps_and_applies_the_fastest(verse_corpus):
    model_cfg, train_cfg = tiny_configs(verse_corpus, max_iters=50, batch_size=4)
    trainer = Trainer(model_cfg, train_cfg, verse_corpus)
    tuner = ThreadTuner(candidates=list(range(1, cpu_count() + 1)), trials=2)
    seen: list[int] = []
    try:
        while not tuner.done:
            tuner.before_step()
            seen.append(get_blas_threads())
            tuner.after_step(trainer.step().step_s)
        assert tuner.chosen in range(1, cpu_count() + 1)
        assert get_blas_threads() == tuner.chosen
        assert all(len(t) == 2 for t in tuner.times.values())
        assert set(seen[1:]) == set(tuner.candidates)  # every count was really tried
    finally:
        set_blas_threads(1)


def test_the_fastest_count_wins():
    tuner = ThreadTuner(candidates=[1, 2], trials=3)
    try:
        tuner.after_step(9.0)  # warm-up, ignored
        for t in (5.0, 5.0, 5.0, 2.0, 2.0, 9.0):
            tuner.before_step()
            tuner.after_step(t)
        assert tuner.chosen == 2
        assert get_blas_threads() == 2 or cpu_count() < 2
    finally:
        set_blas_threads(1)
