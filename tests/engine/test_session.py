import math
import shutil

import pytest

from engine import checkpoint
from engine.checkpoint import CheckpointError
from engine.runlog import METRIC_NUMBERS, RunFollower, RunLog, history, read_run
from engine.session import IterationReport, TrainingSession
from engine.trainer import GaveWay, Trainer
from tests.engine.conftest import tiny_configs

RECORD_KEYS = {
    *("iter", "loss", "lr", "grad_norm", "step_s", "tokens_s"),
    *("arena_in_use", "arena_reserved", "rss"),
}


def make_trainer(corpus, **overrides) -> Trainer:
    settings = {"max_iters": 12, "batch_size": 4, "eval_interval": 3, "eval_iters": 2, "sample_interval": 4}
    model_cfg, train_cfg = tiny_configs(corpus, **(settings | overrides))
    return Trainer(model_cfg, train_cfg, corpus)


def plain_losses(corpus, n: int) -> list[float]:
    trainer = make_trainer(corpus)
    return [trainer.step().loss for _ in range(n)]


def test_an_evaluation_and_a_sample_give_way_to_a_person_waiting(tmp_path, verse_corpus, one_thread):
    """A large model's evaluation takes 16 s and its sample 10 s, in which Pause and Ctrl-C waited."""
    session = TrainingSession(make_trainer(verse_corpus), tmp_path / "run")
    asked: list[int] = []
    waiting_at = {3: 1, 4: 5}  # iteration: how many times it is asked before the person comes

    def give_way() -> bool:
        it = session.trainer.iteration
        asked.append(it)
        return asked.count(it) > waiting_at.get(it, 10**9)

    session.give_way = give_way
    reports = [session.step() for _ in range(8)]
    assert [r.record["iter"] for r in reports if r.val_loss is not None] == [6]  # 3 gave way mid-way
    assert "val_loss" not in reports[2].record and asked.count(3) == 2  # after one batch of two
    assert [r.record["iter"] for r in reports if r.sample] == [8]  # 4 gave way at its 5th character
    assert all(not r.warnings for r in reports)
    assert [r["iter"] for r in read_run(tmp_path / "run").records] == list(range(1, 9))  # each recorded
    with pytest.raises(GaveWay):
        session.trainer.evaluate(give_way=lambda: True)
    session.close()


def test_a_session_logs_evaluates_samples_and_checkpoints_at_iteration_boundaries(
    tmp_path, verse_corpus, one_thread
):
    session = TrainingSession(make_trainer(verse_corpus), tmp_path / "run", checkpoint_every=2, keep=2)
    reports = []
    while not session.finished:
        reports.append(session.step())
    assert [r.record["iter"] for r in reports] == list(range(1, 13))
    assert all(RECORD_KEYS <= set(r.record) for r in reports)
    # what the readers check and the window keeps a column of
    assert {key for r in reports for key in r.record} == {"iter", *METRIC_NUMBERS}
    assert [r.record["iter"] for r in reports if r.val_loss is not None] == [3, 6, 9, 12]
    assert all(("val_loss" in r.record) == (r.val_loss is not None) for r in reports)
    assert [r.record["iter"] for r in reports if r.sample is not None] == [4, 8, 12]
    assert all(len(r.sample) == 200 for r in reports if r.sample)
    assert all(r.checkpoint is not None for r in reports if r.record["iter"] % 2 == 0)
    assert reports[0].record["rss"] > 0 and reports[0].record["arena_reserved"] > 0

    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["best.safetensors", "iter_000010.safetensors", "iter_000012.safetensors"]
    final = session.finish()
    assert final == tmp_path / "run" / "checkpoints" / "final.safetensors" and session.finish() == final
    assert checkpoint.load(final).iteration == 12
    best = checkpoint.load(tmp_path / "run" / "checkpoints" / "best.safetensors")
    assert best.metadata["best_val_loss"] == min(r.val_loss for r in reports if r.val_loss is not None)

    run = read_run(tmp_path / "run")
    assert [r["iter"] for r in run.records] == list(range(1, 13))
    assert run.config["train"]["max_iters"] == 12 and run.config["start_iteration"] == 0
    assert [it for it, _ in RunFollower(run.run_dir).poll_samples()] == [4, 8, 12]
    with pytest.raises(RuntimeError, match="finished"):
        session.step()


def test_evaluating_sampling_and_exporting_do_not_change_the_training(tmp_path, verse_corpus, one_thread):
    session = TrainingSession(make_trainer(verse_corpus, eval_interval=1, sample_interval=1))
    losses = []
    for i in range(8):
        losses.append(session.step().record["loss"])
        if i == 4:
            session.export(tmp_path / "mid.safetensors")
            with pytest.raises(CheckpointError, match="does not exist"):
                session.export(tmp_path / "gone" / "mid.safetensors")
    assert losses == plain_losses(verse_corpus, 8)
    assert checkpoint.load(tmp_path / "mid.safetensors").iteration == 5
    assert session.finish() is None  # no run folder, no final file


def test_periodic_samples_are_the_same_at_the_same_point_of_a_run(verse_corpus, one_thread):
    def samples() -> list[str]:
        session = TrainingSession(make_trainer(verse_corpus, sample_interval=2))
        return [s for _ in range(6) if (s := session.step().sample) is not None]

    first = samples()
    assert first == samples() and len(first) == 3 and len(set(first)) == 3


def test_a_checkpoint_that_cannot_be_written_is_reported_and_training_goes_on(
    tmp_path, verse_corpus, one_thread, monkeypatch
):
    trainer = make_trainer(verse_corpus, eval_interval=0)
    session = TrainingSession(trainer, tmp_path / "run", checkpoint_every=2)
    session.step()
    session.step()  # iteration 2: a good periodic checkpoint
    good = (tmp_path / "run" / "checkpoints" / "iter_000002.safetensors").read_bytes()

    def disk_full(trainer, path, run_dir=None):
        raise CheckpointError(f"cannot write {path}: no space left on device")

    monkeypatch.setattr(checkpoint, "save", disk_full)
    session.step()
    report = session.step()  # iteration 4: its checkpoint fails
    assert report.checkpoint is None
    [warning] = report.warnings
    assert warning.startswith("checkpoint not saved: cannot write") and "no space left" in warning
    assert session.step().record["iter"] == 5  # the run goes on
    assert (tmp_path / "run" / "checkpoints" / "iter_000002.safetensors").read_bytes() == good
    session.close()


def test_a_run_folder_that_cannot_be_written_is_reported_once_and_training_goes_on(
    tmp_path, verse_corpus, one_thread, monkeypatch
):
    trainer = make_trainer(verse_corpus, eval_interval=0, sample_interval=3)
    session = TrainingSession(trainer, tmp_path / "run")
    session.step()
    session.step()
    real_append = RunLog.append

    def disk_full(self: RunLog, record: dict) -> None:
        self._metrics.write('{"iter": 3, "lo')  # half a line reached the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunLog, "append", disk_full)
    [warning] = session.step().warnings  # iteration 3, its sample written, its record not
    assert warning.startswith("the run folder cannot be written") and "No space left" in warning
    monkeypatch.setattr(RunLog, "append", real_append)
    assert [session.step().warnings for _ in range(3)] == [(), (), ()]  # said once; training goes on
    assert trainer.iteration == 6
    assert session.finish() is not None  # the final checkpoint is still written
    run = read_run(tmp_path / "run")
    assert [r["iter"] for r in run.records] == [1, 2]  # whole records, up to where writing failed
    assert [it for it, _ in RunFollower(run.run_dir).poll_samples()] == [3]


def test_close_ends_a_session_that_trained_nothing_without_a_final_checkpoint(tmp_path, verse_corpus):
    session = TrainingSession(make_trainer(verse_corpus), tmp_path / "run")
    session.close()
    session.close()  # idempotent
    assert session.finished
    with pytest.raises(RuntimeError, match="finished"):
        session.step()
    assert session.finish() is None  # closed: nothing more is written
    assert not (tmp_path / "run" / "checkpoints" / "final.safetensors").exists()


def test_a_session_that_trains_nothing_writes_no_final_checkpoint_and_leaves_no_folder(
    tmp_path, verse_corpus
):
    """A checkpoint loaded to sample from: its model is in that file already."""
    session = TrainingSession(make_trainer(verse_corpus), tmp_path / "looked")
    assert session.sample(n_tokens=5)
    assert session.finish() is None and not (tmp_path / "looked").exists()
    session = TrainingSession(make_trainer(verse_corpus), tmp_path / "trained")
    session.step()
    assert session.finish() == tmp_path / "trained" / "checkpoints" / "final.safetensors"
    assert session.finish().exists()


def test_an_iteration_that_diverged_says_what_stopped_being_a_number():
    def report(loss: float, norm: float) -> IterationReport:
        return IterationReport({"iter": 7, "loss": loss, "grad_norm": norm}, None, None, None)

    assert report(2.5, 0.8).diverged is None
    assert report(math.nan, math.nan).diverged == "the loss is nan"
    assert report(2.5, math.inf).diverged == "the gradient norm is inf"  # no update was made: said so


def test_a_session_names_the_run_folder_its_model_came_from(tmp_path, verse_corpus):
    def came_from(**extra: str):
        return TrainingSession(make_trainer(verse_corpus), extra_config=extra).came_from()

    assert came_from() is None  # a new model
    assert came_from(continued_from=str(tmp_path / "a")) == tmp_path / "a"
    resumed = tmp_path / "b" / "checkpoints" / "final.safetensors"
    assert came_from(resumed_from=str(resumed)) == tmp_path / "b"  # above its checkpoints/
    assert came_from(resumed_from=str(tmp_path / "c.safetensors")) == tmp_path  # a file kept anywhere


def test_a_run_shorter_than_its_sample_interval_still_ends_with_a_sample(tmp_path, verse_corpus):
    session = TrainingSession(make_trainer(verse_corpus, max_iters=6, sample_interval=4), tmp_path / "run")
    samples = [r.record["iter"] for r in (session.step() for _ in range(6)) if r.sample is not None]
    assert samples == [4, 6] and session.last_sample is not None and session.last_sample[0] == 6
    assert [it for it, _ in RunFollower(tmp_path / "run").poll_samples()] == [4, 6]


def test_a_sample_of_weights_that_overflow_is_a_warning_not_the_end_of_the_run(
    tmp_path, verse_corpus, monkeypatch
):
    from engine.trainer import NonFiniteModel

    def overflowing(self, *args, **kwargs):
        raise NonFiniteModel("the model's outputs are not finite numbers")
        yield ""  # a generator, as the real one: it raises at the first character

    monkeypatch.setattr(Trainer, "generate_iter", overflowing)
    session = TrainingSession(make_trainer(verse_corpus, max_iters=4, sample_interval=2), tmp_path / "run")
    reports = [session.step() for _ in range(4)]
    assert [r.warnings for r in reports][1] == (
        "no sample at iteration 2: the model's outputs are not finite numbers",
    )
    assert session.trainer.iteration == 4 and session.last_sample is None


def test_a_checkpoint_names_the_run_folder_whose_records_lead_to_its_model(tmp_path, verse_corpus):
    """A copy exported to the desktop had no way back to its curves."""
    session = TrainingSession(make_trainer(verse_corpus), tmp_path / "run")
    session.step()
    copy = session.export(tmp_path / "copy.safetensors")
    assert checkpoint.recorded_run_dir(copy) == (tmp_path / "run").resolve()
    final = session.finish()
    assert checkpoint.recorded_run_dir(final) == (tmp_path / "run").resolve()
    # loaded, and exported before it trains: its records are in the folder it came from
    loaded = TrainingSession(
        checkpoint.restore(final, verse_corpus)[0],
        tmp_path / "next",
        extra_config={"resumed_from": str(final)},
    )
    again = loaded.export(tmp_path / "again.safetensors")
    assert checkpoint.recorded_run_dir(again) == tmp_path / "run"
    loaded.close()
    assert (
        checkpoint.recorded_run_dir(checkpoint.save(session.trainer, tmp_path / "bare.safetensors")) is None
    )


def test_a_run_resumed_from_a_copy_kept_elsewhere_has_the_curves_that_led_to_it(tmp_path, verse_corpus):
    first = TrainingSession(make_trainer(verse_corpus), tmp_path / "first")
    for _ in range(3):
        first.step()
    copy = tmp_path / "copy.safetensors"
    shutil.copyfile(first.finish(), copy)  # exported to the desktop, say
    trainer = checkpoint.restore(copy, verse_corpus)[0]
    later = TrainingSession(trainer, tmp_path / "later", extra_config={"resumed_from": str(copy)})
    later.step()
    later.step()
    later.finish()
    assert [r["iter"] for r in history(read_run(tmp_path / "later"))] == [1, 2, 3, 4, 5]
    # and where it came from is that run, not the folder the copy lies in
    assert later.came_from() == (tmp_path / "first").resolve()
