"""The training session: one iteration and everything due at its boundary.

``TrainingSession.step()`` is the loop body that both ``chargpt train`` and the window's
worker drive: a trainer step, then evaluation, sampling, checkpoints and the run-log line,
all between iterations. Evaluation and sampling draw from generators derived from the seed
and the iteration, never from the training batches' generator, so they cannot change what
the model is trained on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psutil

import engine
from engine import checkpoint
from engine.config import preset_of
from engine.parallel import ShardError
from engine.runlog import RunLog, run_dir_of
from engine.trainer import GaveWay, NonFiniteModel, Trainer

T = TypeVar("T")

SAMPLE_TEMPERATURE = 0.8


@dataclass(frozen=True)
class IterationReport:
    record: dict[str, Any]  # the metrics.jsonl object for this iteration
    val_loss: float | None  # set on iterations where evaluation ran
    sample: str | None  # set on iterations where a periodic sample was generated
    checkpoint: Path | None  # set when a periodic or best checkpoint was written
    # what went wrong and training survived: a checkpoint not written, a helper process lost
    warnings: tuple[str, ...] = ()

    @property
    def diverged(self) -> str | None:
        """What stopped being a finite number in this iteration ("the loss is nan"), which left
        the weights as they were; None if nothing did."""
        loss, norm = self.record["loss"], self.record.get("grad_norm", 0.0)
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        if not math.isfinite(norm):  # a finite loss, but no update: said too, not skipped silently
            return f"the gradient norm is {norm}"
        return None


class TrainingSession:
    """Drives ``trainer`` one iteration at a time, writing ``run_dir`` if given.

    Evaluates every ``eval_interval`` iterations and at the last one, samples every
    ``sample_interval`` and at the last one, saves ``iter_NNNNNN.safetensors`` every ``checkpoint_every``
    (keeping the last ``keep``; 0 keeps all) and ``best.safetensors`` when the validation
    loss improves. ``finish()`` writes ``final.safetensors``.
    """

    def __init__(
        self,
        trainer: Trainer,
        run_dir: str | Path | None = None,
        *,
        checkpoint_every: int = 0,
        keep: int = 3,
        sample_tokens: int = 200,
        extra_config: Mapping[str, Any] | None = None,  # more for config.json (resumed from, threads)
    ) -> None:
        self.trainer = trainer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoint_every, self.keep, self.sample_tokens = checkpoint_every, keep, sample_tokens
        self.last_val_loss: float | None = None
        self.last_sample: tuple[int, str] | None = None  # (iteration, text) of the newest periodic one
        self._final: Path | None = None
        self._started_at = trainer.iteration
        self._closed = False
        self._log_failed = False  # the run folder's records stopped at a write that failed
        # True when a person waits (the window's Pause, Stop, closing): this iteration's
        # evaluation or periodic sample, which a large model takes 16 s and 10 s over, is left off
        self.give_way: Callable[[], bool] | None = None
        self._memory = ProcessMemory()
        self._log = RunLog(self.run_dir) if self.run_dir is not None else None
        extra = dict(extra_config or {})
        self._came_from = {k: extra[k] for k in ("continued_from", "resumed_from") if extra.get(k)}
        if extra.get("resumed_from"):  # a copy kept away from its run: where its curves are
            folders = checkpoint.run_folders(extra["resumed_from"])
            if len(folders) > 1:
                extra["resumed_run"] = self._came_from["resumed_run"] = str(folders[1])
        if self._log is not None:
            self._log.write_config(self._config(extra))

    @property
    def finished(self) -> bool:
        """No more steps are planned: max_iters reached, or ``finish()`` called."""
        return self._closed or self.trainer.finished

    def step(self) -> IterationReport:
        if self._closed:
            raise RuntimeError("the session is finished; start a new one to train further")
        tr = self.trainer
        cfg = tr.train_cfg
        warnings: list[str] = []
        m = self._with_helpers(tr.step, warnings)
        it = m.iteration
        record: dict[str, Any] = {"iter": it, "loss": m.loss}
        val_loss = None
        saved: Path | None = None
        if (cfg.eval_interval > 0 and it % cfg.eval_interval == 0) or it == cfg.max_iters:
            with contextlib.suppress(GaveWay):
                val_loss, improved = self._evaluate(warnings)
                record["val_loss"] = val_loss
                if improved and self._log is not None:
                    saved = self._save(self._log.best_path, warnings)
        record |= {
            "lr": m.lr,
            "grad_norm": m.grad_norm,
            "step_s": m.step_s,
            "tokens_s": m.tokens_s,
            "arena_in_use": m.arena_in_use,
            "arena_reserved": m.arena_reserved,
            "rss": self._memory.rss(self.trainer.helper_pids),
        }
        sample = None
        # at the last iteration too: a run shorter than the interval showed no text at all
        if cfg.sample_interval > 0 and (it % cfg.sample_interval == 0 or it == cfg.max_iters):
            try:
                sample = self.sample(give_way=self.give_way)
            except GaveWay:
                pass
            except NonFiniteModel as e:  # weights that overflow: the loss tells the rest
                warnings.append(f"no sample at iteration {it}: {e}")
            else:
                self.last_sample = (it, sample)
                self._write(lambda log: log.add_sample(it, sample), warnings)
        if self._log is not None and self.checkpoint_every > 0 and it % self.checkpoint_every == 0:
            saved = self._save(self._log.periodic_path(it), warnings)
            if saved is not None:
                self._log.rotate(self.keep)
        self._write(lambda log: log.append(record), warnings)
        return IterationReport(record, val_loss, sample, saved, tuple(warnings))

    def _write(self, write: Callable[[RunLog], None], warnings: list[str]) -> None:
        """A record or a sample into the run folder. A failure (disk full, say) must not end the
        run either: the folder's records stop there, with a warning, and training goes on."""
        if self._log is None or self._log_failed:
            return
        try:
            write(self._log)
        except OSError as e:
            self._log_failed = True
            warnings.append(f"the run folder cannot be written ({e}); its records stop here")

    def _save(self, path: Path, warnings: list[str]) -> Path | None:
        """A periodic or best checkpoint. A failure (disk full, say) must not end the run:
        the earlier file stays intact, and the error joins ``warnings`` for the caller to show."""
        try:
            return checkpoint.save(self.trainer, path, self._records_dir())
        except checkpoint.CheckpointError as e:
            warnings.append(f"checkpoint not saved: {e}")
            return None

    def sample(
        self, prompt: str = "", n_tokens: int | None = None, give_way: Callable[[], bool] | None = None
    ) -> str:
        """A sample seeded from the seed and the iteration: the same at the same point of a run.
        Raises GaveWay once ``give_way()`` is true (asked between characters)."""
        tr = self.trainer
        seed = int(np.random.SeedSequence([tr.train_cfg.seed, 3, tr.iteration]).generate_state(1)[0])
        n = self.sample_tokens if n_tokens is None else n_tokens
        chars = []
        for ch in tr.generate_iter(prompt, n, temperature=SAMPLE_TEMPERATURE, seed=seed):
            if give_way is not None and give_way():
                raise GaveWay
            chars.append(ch)
        return "".join(chars)

    def export(self, path: str | Path, *, weights_only: bool = False) -> Path:
        """Checkpoint the trainer now (between iterations) to any path, or only its weights
        with PyTorch names; training is untouched."""
        if weights_only:
            return checkpoint.save_weights(self.trainer, path)
        return checkpoint.save(self.trainer, path, self._records_dir())

    def _records_dir(self) -> Path | None:
        """The run folder whose records lead to the model now, for its checkpoints to name: this
        one once it has trained here, else the one it came from."""
        return self.run_dir if self.trainer.iteration > self._started_at else self.came_from()

    def finish(self) -> Path | None:
        """Write ``final.safetensors`` into the run directory; return its path (None without a
        run directory, or if this session trained nothing: the model is in the checkpoint it
        came from). Idempotent. It does not evaluate: a validation loss taken here would be in
        no record and on no plot, yet could make this iteration the best checkpoint."""
        if self._closed:
            return self._final
        if self._log is not None and self.trainer.iteration > self._started_at:
            self._final = checkpoint.save(self.trainer, self._log.final_path, self.run_dir)
        self.close()
        return self._final

    def close(self) -> None:
        """End the session without a final checkpoint: for one that trained nothing (a loaded
        run already complete) or failed. Idempotent. A run folder in which nothing was trained
        goes: a checkpoint loaded only to sample from left an empty folder behind each time."""
        if self._log is not None:
            with contextlib.suppress(OSError):  # every whole record was flushed when written
                self._log.close()
            if self.trainer.iteration == self._started_at:
                self._log.remove_if_unused()
        self._closed = True

    def origin(self) -> dict[str, str]:
        """What a run that carries this one on records it came from (config.json): this run
        folder; or, if nothing was trained in it (it is gone), where this session came from."""
        if self.run_dir is not None and self.run_dir.is_dir():
            return {"continued_from": str(self.run_dir)}
        return dict(self._came_from)

    def came_from(self) -> Path | None:
        """The run folder that held this session's model before it: the run it continues, or
        the folder of the checkpoint it resumed (None for a new model)."""
        if "continued_from" in self._came_from:
            return Path(self._came_from["continued_from"])
        if "resumed_run" in self._came_from:  # a copy kept away from the run it came from
            return Path(self._came_from["resumed_run"])
        if "resumed_from" in self._came_from:
            return run_dir_of(self._came_from["resumed_from"])
        return None

    def _with_helpers(self, work: Callable[[], T], warnings: list[str]) -> T:
        """``work()``, done again by new helper processes if one is gone (killed by a system
        short of memory, say): a step or an evaluation that fails leaves the run as it was. A
        second failure ends the run."""
        try:
            return work()
        except ShardError as e:
            tr = self.trainer
            threads = tr.threads
            tr.close()
            tr.set_threads(threads)
            result = work()
            warnings.append(f"{e}, and new helpers took over")
            return result

    def _evaluate(self, warnings: list[str]) -> tuple[float, bool]:
        best = self.trainer.best_val_loss
        val = self._with_helpers(lambda: self.trainer.evaluate("val", give_way=self.give_way), warnings)
        self.last_val_loss = val
        return val, self.trainer.best_val_loss < best

    def _config(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        tr = self.trainer
        return {
            "preset": preset_of(tr.model_cfg),  # by the model's shape; None for a model of no preset
            "model": tr.model_cfg.to_dict(),
            "train": tr.train_cfg.to_dict(),
            "params": tr.model_cfg.n_params,
            "corpus": checkpoint.corpus_record(tr.corpus),
            "start_iteration": tr.iteration,
            "checkpoint_every": self.checkpoint_every,
            "keep": self.keep,
            "app_version": engine.__version__,
            "created": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
            **extra,
        }


class ProcessMemory:
    """Resident memory of this process and of a trainer's helper processes. Keeps its psutil
    handles, as a session reads it every iteration."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._helpers: list[psutil.Process] = []

    def rss(self, helper_pids: list[int]) -> int:
        if [p.pid for p in self._helpers] != helper_pids:
            self._helpers = [psutil.Process(pid) for pid in helper_pids]
        total = self._process.memory_info().rss
        for helper in self._helpers:
            with contextlib.suppress(psutil.Error):  # one that just ended counts for nothing
                total += helper.memory_info().rss
        return int(total)
