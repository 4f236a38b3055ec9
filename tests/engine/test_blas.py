"""BLAS thread control. Each check runs in a fresh interpreter: OpenBLAS's thread count is
process-wide state, so a shared test process would test the order of the tests instead of
the engine."""

import subprocess
import sys
from pathlib import Path

from engine.blas import BlasInfo

ROOT = Path(__file__).resolve().parents[2]

SETTING = """
from threadpoolctl import threadpool_info
from engine.blas import blas_info, cpu_count, set_blas_threads

def seen():
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

assert set_blas_threads(1) == 1
assert seen() == {1}
n = min(2, cpu_count())
assert set_blas_threads(n) == n
assert seen() == {n}
info = blas_info()
assert info.library != "unknown" and info.num_threads == n
assert info.library in info.describe()
"""

TUNING = """
from engine.blas import ThreadTuner, cpu_count, get_blas_threads
from engine.data import Corpus
from engine.trainer import Trainer
from tests.engine.conftest import VERSE, tiny_configs

corpus = Corpus(VERSE)
model_cfg, train_cfg = tiny_configs(corpus, max_iters=50, batch_size=4)
trainer = Trainer(model_cfg, train_cfg, corpus)
tuner = ThreadTuner(candidates=list(range(1, cpu_count() + 1)), trials=2)
seen = []
while not tuner.done:
    tuner.before_step()
    seen.append(get_blas_threads())
    tuner.after_step(trainer.step().step_s)
assert tuner.chosen in range(1, cpu_count() + 1)
assert get_blas_threads() == tuner.chosen
assert all(len(t) == 2 for t in tuner.times.values())
assert set(seen[1:]) == set(tuner.candidates)  # every count was really tried

fake = ThreadTuner(candidates=[1, 2], trials=3)
fake.after_step(9.0)  # the warm-up step is not counted
for t in (5.0, 5.0, 5.0, 2.0, 2.0, 9.0):
    fake.before_step()
    fake.after_step(t)
assert fake.chosen == 2
assert get_blas_threads() == min(2, cpu_count())
"""

# threadpoolctl 3.8 ignores every thread but the first that set OpenBLAS's limit while that
# one lives (and a Qt thread never stops counting as alive): the worker of a second run, or
# the main thread after a run, must still be obeyed.
ANOTHER_THREAD = """
import threading
from engine.blas import cpu_count, get_blas_threads, set_blas_threads

n = min(2, cpu_count())
first_set, done = threading.Event(), threading.Event()

def first():
    set_blas_threads(1)
    first_set.set()
    done.wait()  # still alive

owner = threading.Thread(target=first, daemon=True)  # a failed assert below must not hang
owner.start()
first_set.wait()
assert set_blas_threads(n) == n == get_blas_threads()
done.set()
owner.join()
"""


def run_fresh(code: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert r.returncode == 0, r.stderr


def test_setting_blas_threads_is_visible_through_threadpoolctl():
    run_fresh(SETTING)


def test_auto_threads_times_each_count_then_keeps_and_applies_the_fastest():
    run_fresh(TUNING)


def test_a_thread_sets_the_count_while_an_earlier_one_that_set_it_lives():
    run_fresh(ANOTHER_THREAD)


def test_a_blas_that_threadpoolctl_cannot_find_is_said_to_be_out_of_reach():
    """threadpoolctl before 3.5 found no BLAS in numpy 2's wheels: the count set nothing."""
    missing = BlasInfo("unknown", "", "", 1, "")
    assert not missing.found
    assert "cannot be set" in missing.describe() and "threadpoolctl" in missing.describe()
    found = BlasInfo("openblas", "0.3.27", "pthreads", 2, "/lib/libopenblas.so")
    assert found.found and found.describe() == "openblas 0.3.27 (pthreads)"
