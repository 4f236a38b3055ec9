"""The training loop, one iteration at a time, and sampling from the model."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.arena import Arena, ArenaStats
from engine.blas import get_blas_threads, set_blas_threads
from engine.config import ModelConfig, TrainConfig
from engine.data import Corpus
from engine.errors import InputError
from engine.memory import check_memory
from engine.model import GPT, KVCache
from engine.optim import AdamW, clip_scale, lr_at
from engine.parallel import ShardedStep, ShardError, TrainingBuffers, plan_threads


@dataclass(frozen=True)
class StepMetrics:
    iteration: int  # 1-based: the number of optimizer steps taken
    loss: float
    lr: float
    grad_norm: float
    step_s: float
    tokens_s: float
    arena_in_use: int  # bytes in use when the iteration's work was done, before reset
    arena_peak: int
    arena_reserved: int
    arena_chunks: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainerState:
    """What a checkpoint holds besides the tensors, to resume bit for bit."""

    iteration: int
    optimizer_step: int  # AdamW's t, for its bias correction
    data_rng: dict[str, Any]  # the training batches' generator state: the data position
    best_val_loss: float  # inf until the first evaluation


class Trainer:
    def __init__(
        self,
        model_cfg: ModelConfig,
        train_cfg: TrainConfig,
        corpus: Corpus,
        *,
        arena_debug: bool = False,
        memory_check: bool = True,
    ) -> None:
        """``memory_check``: refuse a batch that the memory cannot train (NotEnoughMemory); off
        for a model only to sample from and export, which needs none of the activations."""
        if model_cfg.vocab_size != corpus.vocab_size:
            raise ValueError(
                f"model vocabulary ({model_cfg.vocab_size}) differs from the corpus's ({corpus.vocab_size})"
            )
        corpus.check_context(model_cfg.context)
        if memory_check:
            check_memory(model_cfg, train_cfg)
        self.model_cfg, self.train_cfg, self.corpus = model_cfg, train_cfg, corpus
        # In shared memory from the start, for helper processes to map when set_threads splits
        # the batch (engine.parallel).
        self._buffers = TrainingBuffers(model_cfg.n_params, train_cfg.dtype)
        buf = self._buffers
        self.model = GPT(model_cfg, dtype=np.dtype(train_cfg.dtype), flat=buf.params, grad_flat=buf.grads)
        self.model.init_weights(np.random.default_rng([train_cfg.seed, 0]))
        self.optimizer = AdamW(
            buf.params,
            buf.grads,
            self.model.n_decay,
            beta1=train_cfg.beta1,
            beta2=train_cfg.beta2,
            eps=train_cfg.eps,
            weight_decay=train_cfg.weight_decay,
            moments=(buf.m, buf.v),
        )
        self.data_rng = np.random.default_rng([train_cfg.seed, 1])
        self.arena = Arena(debug=arena_debug)
        self._passes = ShardedStep(self.model, self.optimizer, self.arena)
        self.iteration = 0
        self.best_val_loss = math.inf

    @property
    def tokens_per_step(self) -> int:
        return self.train_cfg.batch_size * self.model_cfg.context

    @property
    def finished(self) -> bool:
        return self.iteration >= self.train_cfg.max_iters

    def extend(self, max_iters: int) -> None:
        """Train on to ``max_iters`` in all. The cosine schedule stretches to the new total, as
        when a checkpoint is resumed with a larger one (``chargpt train --resume --iters``)."""
        if max_iters <= self.iteration:
            raise ValueError(f"the run is at iteration {self.iteration}: a new total must be larger")
        self.train_cfg = replace(self.train_cfg, max_iters=max_iters)

    def step(self) -> StepMetrics:
        """One optimizer step on a fresh training batch."""
        t0 = time.perf_counter()
        cfg = self.train_cfg
        position, steps = self.data_rng.bit_generator.state, self.optimizer.t
        try:
            x, y = self.corpus.batch(self.data_rng, "train", cfg.batch_size, self.model_cfg.context)
            loss = self._passes.loss_and_grads(x, y)
            grad_norm = self._passes.grad_norm()
            lr = lr_at(self.iteration, cfg)
            if math.isfinite(loss) and math.isfinite(grad_norm):
                self._passes.update(lr, clip_scale(grad_norm, cfg.grad_clip))
        except BaseException:
            # A step that fails (out of memory, a helper gone) leaves the run where it was, the
            # same batch next, so that a checkpoint saved now resumes it as if nothing happened.
            self.data_rng.bit_generator.state = position
            self.optimizer.t = steps
            self._passes.reset()
            raise
        # A non-finite loss leaves the weights as they were, so a paused run can still be saved.
        stats = self.arena_stats()
        self._passes.reset()
        self.iteration += 1
        dt = time.perf_counter() - t0
        return StepMetrics(
            iteration=self.iteration,
            loss=loss,
            lr=lr,
            grad_norm=grad_norm,
            step_s=dt,
            tokens_s=self.tokens_per_step / dt if dt > 0 else 0.0,
            arena_in_use=stats.in_use,
            arena_peak=stats.peak,
            arena_reserved=stats.reserved,
            arena_chunks=stats.chunks,
        )

    def set_threads(self, n: int, *, split: bool = True) -> int:
        """Train on ``n`` cores from the next step: the batch split into ``n`` shards, this
        thread and ``n - 1`` helper processes with one BLAS thread each (engine.parallel),
        or, for a batch too small to split (or without ``split``: a model only to sample
        from, which needs no helpers), one pass on ``n`` BLAS threads. Call it from the
        thread that runs ``step``."""
        plan = plan_threads(self.model_cfg, self.train_cfg.batch_size, n, split=split)
        if plan.shards != self._passes.shards:
            self._passes.close()
            # Sized for the whole batch, the arena would keep twice what half of it needs for
            # the rest of the run (Auto times one thread, so one unsplit pass, before two).
            self.arena.free()
            try:
                self._passes = ShardedStep(self.model, self.optimizer, self.arena, plan.shards, self._buffers)
            except ShardError:  # no helper processes here: the whole batch on n BLAS threads
                plan = plan_threads(self.model_cfg, self.train_cfg.batch_size, n, split=False)
                self._passes = ShardedStep(self.model, self.optimizer, self.arena)
        applied = set_blas_threads(plan.blas)
        self.optimizer.set_threads(plan.update)
        return n if plan.shards > 1 else applied

    def close(self) -> None:
        """Stop the helper processes, if any, and give back the arena's memory: for a model
        that is done training, or about to train on new helpers. A later ``set_threads``
        starts helpers again, and the next pass sizes the arena again."""
        self._passes.close()
        self._passes = ShardedStep(self.model, self.optimizer, self.arena)
        self.arena.free()

    @property
    def helper_pids(self) -> list[int]:
        """The processes that train shards of the batch besides this one (engine.parallel)."""
        return self._passes.helper_pids

    @property
    def threads(self) -> int:
        return self._passes.shards if self._passes.shards > 1 else get_blas_threads()

    def run(self) -> Iterator[StepMetrics]:
        """Steps until max_iters, one metrics record each: the loop the CLI and the window share."""
        while not self.finished:
            yield self.step()

    def evaluate(
        self, split: str = "val", iters: int | None = None, give_way: Callable[[], bool] | None = None
    ) -> float:
        """Mean loss over ``iters`` batches of ``split``. Uses its own generator seeded from
        the iteration, so evaluating never changes the training batches that follow. Raises
        GaveWay, before a batch, once ``give_way()`` is true."""
        cfg = self.train_cfg
        rng = np.random.default_rng([cfg.seed, 2, self.iteration])
        losses = []
        for _ in range(iters or cfg.eval_iters):
            if give_way is not None and give_way():
                raise GaveWay
            x, y = self.corpus.batch(rng, split, cfg.batch_size, self.model_cfg.context)
            losses.append(self._passes.loss(x, y))
        val = float(np.mean(losses))
        if split == "val" and val < self.best_val_loss:
            self.best_val_loss = val
        return val

    def arena_stats(self) -> ArenaStats:
        """Every shard's arena together (one arena unless the batch is split)."""
        return self._passes.arena_stats()

    # -- checkpoint state ----------------------------------------------------
    def state_tensors(self) -> dict[str, NDArray[Any]]:
        """Parameters by GPT-2 name, then AdamW's moments as ``optim.m.<name>`` and
        ``optim.v.<name>``: views of the live buffers, not copies."""
        opt = self.optimizer.state()
        tensors = dict(self.model.params)
        for kind in ("m", "v"):
            for name, view in named_views(opt[kind], self.model_cfg).items():
                tensors[f"optim.{kind}.{name}"] = view
        return tensors

    def state(self) -> TrainerState:
        return TrainerState(
            iteration=self.iteration,
            optimizer_step=int(self.optimizer.state()["t"]),
            data_rng=dict(self.data_rng.bit_generator.state),
            best_val_loss=self.best_val_loss,
        )

    def load_state(self, tensors: Mapping[str, NDArray[Any]], state: TrainerState) -> None:
        """Put back what ``state_tensors`` and ``state`` gave (shapes already checked)."""
        names = [name for name, _ in self.model_cfg.param_shapes()]
        for name in names:
            self.model.params[name][...] = tensors[name]
        m, v = (np.concatenate([tensors[f"optim.{k}.{n}"].ravel() for n in names]) for k in "mv")
        self.optimizer.load_state(m, v, state.optimizer_step)
        self.data_rng.bit_generator.state = state.data_rng
        self.iteration = state.iteration
        self.best_val_loss = state.best_val_loss

    def generate(
        self,
        prompt: str = "",
        n_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        return "".join(self.generate_iter(prompt, n_tokens, temperature, top_k, seed))

    def generate_iter(
        self,
        prompt: str = "",
        n_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> Iterator[str]:
        """Yield ``n_tokens`` generated characters one at a time, after ``prompt``."""
        return generate_iter(
            self.model, self.corpus.tokenizer, prompt, n_tokens, temperature, top_k, seed, self.arena
        )


def named_views(flat: NDArray[Any], cfg: ModelConfig) -> dict[str, NDArray[Any]]:
    """Views of a flat buffer laid out like the parameters, by name (``param_shapes`` order)."""
    views, offset = {}, 0
    for name, shape in cfg.param_shapes():
        size = math.prod(shape)
        views[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return views


# A loss that averages above this times a uniform guess's, over this many iterations after the
# warmup, is not learning (a margin over the guess: the loss of a text with little to learn
# sits near it, noisily).
NOT_LEARNING_WINDOW = 100
NOT_LEARNING_MARGIN = 1.1


def worse_than_a_guess(losses: Sequence[float] | NDArray[Any], vocab_size: int) -> float | None:
    """The mean of the last NOT_LEARNING_WINDOW ``losses`` if it is above what guessing each of
    ``vocab_size`` characters alike scores (ln V), by NOT_LEARNING_MARGIN: the model does worse
    than knowing nothing, as a learning rate too high makes it while clipping keeps every number
    finite (the loss climbed to 800, and nothing was said). None otherwise, or before there
    are that many, or if any is not finite (which is told otherwise)."""
    if vocab_size < 2 or len(losses) < NOT_LEARNING_WINDOW:
        return None
    recent = np.asarray(losses[-NOT_LEARNING_WINDOW:], dtype=np.float64)
    mean = float(recent.mean())
    return mean if np.isfinite(recent).all() and mean > NOT_LEARNING_MARGIN * math.log(vocab_size) else None


class GaveWay(Exception):
    """Work that a run can do without (an evaluation, a periodic sample) left off, because a
    person asked for something: a large model's evaluation takes 16 s, which Pause waited for."""


class NonFiniteModel(InputError, ValueError):
    """A model whose outputs overflow: nothing to sample from."""


def generate_iter(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    n_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | Sequence[int] | None = None,
    arena: Arena | None = None,
) -> Iterator[str]:
    """Sample characters from ``model``: softmax(logits / temperature) over the top k; ``seed``
    as NumPy's generators take it (a number, or numbers that make one seed together)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if n_tokens < 0:
        raise ValueError(f"number of tokens must not be negative, got {n_tokens}")
    ids = list(tokenizer.encode(prompt))  # raises, naming characters outside the vocabulary
    if not ids:
        ids = [tokenizer.stoi.get("\n", 0)]
    if n_tokens == 0:
        return
    rng = np.random.default_rng(seed)
    arena = arena or Arena()
    context = model.cfg.context
    vocab = model.cfg.vocab_size
    kv = KVCache(model.cfg, model.dtype)
    window = np.asarray(ids[-context:], dtype=np.intp)[None, :]
    _, logits = model.forward(window, None, arena, kv=kv)
    for i in range(n_tokens):
        z = logits[0].astype(np.float64)
        arena.reset()
        if not np.isfinite(z).all():
            raise NonFiniteModel(
                "the model's outputs are not finite numbers: its weights overflow (the training that "
                "made them diverged); sample a checkpoint from before the loss went wrong"
            )
        if top_k is not None and 0 < top_k < vocab:
            cutoff = np.partition(z, -top_k)[-top_k]
            z[z < cutoff] = -np.inf
        # Shifted before dividing, so that a tiny temperature sends every other logit to -inf
        # (greedy) rather than the largest to +inf.
        z -= z.max()
        with np.errstate(over="ignore"):
            z /= temperature
        probs = np.exp(z)
        probs /= probs.sum()
        nxt = int(rng.choice(vocab, p=probs))
        ids.append(nxt)
        yield tokenizer.chars[nxt]
        if i + 1 == n_tokens:
            break
        if kv.length < context:  # one new position on the cached keys and values
            logits = model.decode(nxt, kv, arena)
        else:  # the window slides: every position moves, so the whole window again
            window = np.asarray(ids[-context:], dtype=np.intp)[None, :]
            _, logits = model.forward(window, None, arena)
