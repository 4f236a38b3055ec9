"""The worker module's thread helpers, on their own."""

from __future__ import annotations

import gc
import threading

from app.worker import named_for


def test_garbage_in_cycles_is_freed_on_the_gui_thread_not_where_it_was_allocated(qtbot, collector):
    assert not gc.isenabled()
    freed_on: list[threading.Thread] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            freed_on.append(threading.current_thread())

    Cycle()  # garbage at once, which only a collection frees

    kept: list[list[object]] = []

    def allocate() -> None:  # objects that live on, past generation 0's threshold
        kept.extend([] for _ in range(5 * gc.get_threshold()[0]))

    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    assert freed_on == []  # automatic collection would have freed it on the worker
    qtbot.waitUntil(lambda: bool(freed_on), timeout=5_000)
    assert freed_on == [threading.main_thread()]


def test_the_queue_says_whether_a_person_waits_without_taking_the_command():
    from app.worker import PERSON_WAITS, CommandQueue, Pause, SetThreads

    queue = CommandQueue()
    queue.put(SetThreads(2))
    assert not queue.holds(PERSON_WAITS)  # a thread count waits for the next iteration
    queue.put(Pause())
    assert queue.holds(PERSON_WAITS)
    assert [type(c) for c in queue.drain()] == [SetThreads, Pause]


def test_an_export_named_for_an_iteration_is_renamed_for_the_one_it_holds(tmp_path):
    named = tmp_path / "chargpt-small-iter115.safetensors"
    assert named_for(named, 115, 292) == tmp_path / "chargpt-small-iter292.safetensors"
    assert named_for(named, 115, 115) == named
    assert named_for(tmp_path / "mine.safetensors", 115, 292) == tmp_path / "mine.safetensors"
    assert named_for(tmp_path / "x-iter1150.safetensors", 115, 292) == tmp_path / "x-iter1150.safetensors"
    plots = tmp_path / "chargpt-small-iter115-plots.png"
    assert named_for(plots, 115, 292) == tmp_path / "chargpt-small-iter292-plots.png"
    (tmp_path / "chargpt-small-iter292.safetensors").write_bytes(b"")  # not asked about: kept
    assert named_for(named, 115, 292) == named
