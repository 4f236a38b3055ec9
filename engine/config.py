"""Model and training configurations, and the named presets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from engine.errors import InputError


class ConfigError(ValueError):
    """A setting out of its range: ``field`` names it, ``problem`` says what it must be."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 65
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 1
    d_ff: int = 128
    context: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ConfigError(f.name, f"must be at least 1, got {getattr(self, f.name)}")
        if self.d_model % self.n_heads:
            raise ConfigError("n_heads", f"must divide the model width ({self.d_model}), got {self.n_heads}")

    def param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every parameter as (name, shape), in storage and file order.

        Names follow GPT-2/nanoGPT; linear weights are (out, in) as in PyTorch.
        The 2-D weights come first so that weight decay covers one leading slice
        of the flat parameter buffer.
        """
        C, F, V, T = self.d_model, self.d_ff, self.vocab_size, self.context
        weights: list[tuple[str, tuple[int, ...]]] = [("wte", (V, C)), ("wpe", (T, C))]
        vectors: list[tuple[str, tuple[int, ...]]] = []
        for i in range(self.n_layers):
            p = f"h.{i}."
            weights += [
                (p + "attn.c_attn.weight", (3 * C, C)),
                (p + "attn.c_proj.weight", (C, C)),
                (p + "mlp.c_fc.weight", (F, C)),
                (p + "mlp.c_proj.weight", (C, F)),
            ]
            vectors += [
                (p + "ln_1.weight", (C,)),
                (p + "ln_1.bias", (C,)),
                (p + "attn.c_attn.bias", (3 * C,)),
                (p + "attn.c_proj.bias", (C,)),
                (p + "ln_2.weight", (C,)),
                (p + "ln_2.bias", (C,)),
                (p + "mlp.c_fc.bias", (F,)),
                (p + "mlp.c_proj.bias", (C,)),
            ]
        weights.append(("lm_head.weight", (V, C)))
        vectors += [("ln_f.weight", (C,)), ("ln_f.bias", (C,))]
        return weights + vectors

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.param_shapes())

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 per matrix weight (forward + backward) plus attention.

        The embeddings are lookups, not products; attention's two batched products
        cost 2 T C each way per token and layer over the full T x T, as the usual MFU
        formula (and PyTorch's figure in the bench) counts them, although the engine
        skips the masked blocks above the diagonal (layers.attention_blocks).
        """
        matrix = sum(
            math.prod(shape)
            for name, shape in self.param_shapes()
            if len(shape) == 2 and name not in ("wte", "wpe")
        )
        return 6 * matrix + 12 * self.n_layers * self.context * self.d_model

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# What the window's fields can hold (Qt's spin boxes are 32-bit), and so what a new run may have: a
# run the window cannot show would load with the wrong settings in view. (Not checked when a
# checkpoint is read: one written before these limits still samples, exports and resumes.)
MAX_BATCH_SIZE = 4096
MAX_ITERS = 10_000_000
MAX_SEED = 2**31 - 1
LIMITS = {"batch_size": MAX_BATCH_SIZE, "max_iters": MAX_ITERS, "seed": MAX_SEED}


def check_limits(settings: Mapping[str, Any]) -> None:
    """Raise ConfigError for a training setting (a TrainConfig field) above its limit."""
    for name, most in LIMITS.items():
        if name in settings and settings[name] > most:
            raise ConfigError(name, f"must be at most {most:,}, got {settings[name]:,}")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    max_iters: int = 2000
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_iters: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99  # small batches of characters: a shorter second-moment memory helps
    eps: float = 1e-8
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    sample_interval: int = 500
    checkpoint_interval: int = 0  # 0: no periodic checkpoints
    seed: int = 1337
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_iters", "eval_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError("lr", f"must be a positive number, got {self.lr}")
        # 0 turns clipping and each periodic task off
        for name in (
            "min_lr",
            "warmup_iters",
            "weight_decay",
            "grad_clip",
            "eval_interval",
            "sample_interval",
            "checkpoint_interval",
            "seed",  # NumPy's generators take no negative seed
        ):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(name, f"must be 0 or more, got {getattr(self, name)}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError("dtype", f"must be float32 or float64, got {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    name: str
    model: ModelConfig
    train: TrainConfig
    description: str

    def model_for(self, vocab_size: int) -> ModelConfig:
        return replace(self.model, vocab_size=vocab_size)

    def train_with(self, **changes: Any) -> TrainConfig:
        """The preset's training settings with ``changes``. A learning rate given without a
        minimum brings the preset's minimum along in proportion: kept as it is, it could lie
        above a lower rate, and the cosine would then climb instead of decaying. Fewer
        iterations without a warmup shorten the warmup in proportion (never lengthen it): tiny's
        100 iterations of warmup were the whole of a 100-iteration run, which ended at its
        peak rate without decaying at all."""
        t = self.train
        if "lr" in changes and "min_lr" not in changes:
            # to 12 digits: --lr 0.001 gives 0.0001 (in config.json, and to type on resuming),
            # not 9.999999999999999e-05
            changes["min_lr"] = float(f"{t.min_lr * changes['lr'] / t.lr:.12g}")
        if "max_iters" in changes and "warmup_iters" not in changes:
            share = changes["max_iters"] / t.max_iters
            changes["warmup_iters"] = min(t.warmup_iters, round(t.warmup_iters * share))
        return replace(t, **changes)

    def summary(self, vocab_size: int = 65) -> str:
        m = self.model_for(vocab_size)
        # Short enough for the window's preset list at its narrowest (its label spells it out).
        return f"{self.name}: {m.n_layers} × {m.d_model}, {format_count(m.n_params)}"


def plural(n: int, noun: str) -> str:
    """1 thread, 2 threads."""
    return f"{n} {noun}{'s' * (n != 1)}"


def format_count(n: int) -> str:
    """A parameter count for a person: 48K, 19.05M (999,600 is 1.00M, not 1000K)."""
    if round(n, -3) >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


def format_bytes(n: float) -> str:
    """A memory size for a person: 182 MB, 61.3 GB (999.7 MB is 1.0 GB, not 1000 MB)."""
    return f"{n / 1e9:.1f} GB" if round(n, -6) >= 1e9 else f"{n / 1e6:.0f} MB"


def format_duration(seconds: float) -> str:
    """A duration for a progress line or a status bar: 42s, 3m07s, 2h05m; ? if unknown."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# Training defaults were chosen by training each preset on tiny Shakespeare (1.1 MB):
# warmup and peak lr shrink as the model grows, as they do for larger GPTs.
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "tiny",
            ModelConfig(d_model=64, n_heads=2, n_layers=1, d_ff=128, context=32),
            TrainConfig(batch_size=32, max_iters=2000, lr=3e-3, min_lr=3e-4, warmup_iters=100),
            "1 layer × 64: learns in a minute, the place to start",
        ),
        Preset(
            "small",
            ModelConfig(d_model=128, n_heads=4, n_layers=2, d_ff=512, context=64),
            TrainConfig(batch_size=16, max_iters=3000, lr=2e-3, min_lr=2e-4, warmup_iters=100),
            "2 layers × 128: a few minutes to words and punctuation",
        ),
        Preset(
            "v2",
            ModelConfig(d_model=256, n_heads=4, n_layers=1, d_ff=1024, context=64),
            TrainConfig(batch_size=16, max_iters=3000, lr=1e-3, min_lr=1e-4, warmup_iters=100),
            "1 layer × 256 (the second version of small): twice its parameters, in one wide layer "
            "instead of two narrow ones",
        ),
        Preset(
            "medium",
            ModelConfig(d_model=256, n_heads=8, n_layers=4, d_ff=1024, context=128),
            TrainConfig(batch_size=16, max_iters=4000, lr=1e-3, min_lr=1e-4, warmup_iters=200),
            "4 layers × 256: tens of minutes to text that reads like its corpus",
        ),
        Preset(
            "large",
            ModelConfig(d_model=512, n_heads=16, n_layers=6, d_ff=2048, context=128),
            TrainConfig(batch_size=16, max_iters=5000, lr=6e-4, min_lr=6e-5, warmup_iters=200),
            "6 layers × 512: hours on a laptop",
        ),
    )
}


def preset_of(model: ModelConfig) -> str | None:
    """The name of the preset whose model this is (at any vocabulary), or None."""
    return next((name for name, p in PRESETS.items() if p.model_for(model.vocab_size) == model), None)


class PresetError(InputError, ValueError):
    pass


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise PresetError(f"unknown preset {name!r}; choose one of: {known}") from None
