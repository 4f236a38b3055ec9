"""``chargpt bench``: milliseconds per iteration, GFLOP/s and MFU, arena and process memory.

Each row trains one preset at one batch size and thread count on random text (the
data does not change the arithmetic) and times whole iterations as ``Trainer.step``
runs them: a batch drawn, forward, backward, clipping, AdamW and arena reset. MFU
compares the achieved GFLOP/s with a float32 matrix product on the same threads. With
``--torch``, the same model is timed in PyTorch eager in the same process (PyTorch is
never a dependency: install it yourself to use this), and its MFU against the same peak
shows how much of the peak this machine lets a mature framework reach on that row.

A shared machine's speed drifts by tens of percent within minutes, so a row does not time
one thing after another: it takes ROUNDS turns of our iterations, PyTorch's and the
matrix product in turn. Drift then moves both sides alike, and the speed ratio ("x") is
taken within each turn, PyTorch's median over ours, then the median over the turns.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np

import engine
from engine.blas import blas_info, cpu_count, set_blas_threads
from engine.config import (
    MAX_ITERS,
    PRESETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    check_limits,
    get_preset,
    plural,
)
from engine.data import Corpus
from engine.model import activation_bytes
from engine.session import ProcessMemory
from engine.trainer import Trainer

VOCAB = 65  # tiny Shakespeare's: parameter counts and FLOPs then match the usual figures
# Besides the presets: nanoGPT's CPU configuration for tiny Shakespeare, at its own batch size.
NANOGPT = "nanogpt"
NANOGPT_BATCH = 12
BATCHES = "1,16"
ROUNDS = 5  # turns per row of our iterations, PyTorch's and the matmul peak
SETTLE_S = 0.2  # after a turn, for its idle BLAS or OpenMP threads to stop spinning


def bench_model(name: str) -> ModelConfig:
    """A preset's model, or nanoGPT's CPU configuration (4 layers, 4 heads, 128 dims, context 64)."""
    if name == NANOGPT:
        return ModelConfig(vocab_size=VOCAB, d_model=128, n_heads=4, n_layers=4, d_ff=512, context=64)
    return get_preset(name).model_for(VOCAB)


def bench_batches(name: str, batches: list[int]) -> list[int]:
    return [NANOGPT_BATCH] if name == NANOGPT else batches


@dataclass
class Row:
    preset: str
    batch: int
    threads: int
    params: int
    ms_median: float
    ms_p10: float
    ms_p90: float
    tokens_s: float
    gflops: float
    mfu: float
    arena_high_water_mb: float
    activation_mb: float
    arena_ratio: float
    rss_mb: float
    peak_gflops: float  # the best matmul seen during the row's turns: MFU's denominator
    torch_ms: float | None = None
    torch_mfu: float | None = None  # PyTorch's, against the same peak: what this machine allows
    torch_x: float | None = None  # PyTorch's time over ours within each turn, median over turns


def matmul_peak_gflops(threads: int, n: int = 1024, repeats: int = 15) -> float:
    """Best float32 GFLOP/s of an n x n x n product on ``threads`` BLAS threads (which
    stay in force: callers that need another count set it again)."""
    set_blas_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def default_iters(cfg: ModelConfig, batch: int) -> int:
    """Enough iterations for a stable median in a few seconds per row."""
    flops = cfg.flops_per_token() * batch * cfg.context
    return int(np.clip(3e10 / max(flops, 1), 5, 200))


def bench_row(
    name: str, batch: int, threads: int, iters: int | None, *, torch: bool = False, warmup: int = 3
) -> Row:
    """Time ``Trainer.step`` on ``threads`` cores as training runs it (Trainer.set_threads:
    the batch split across processes when that pays, else that many BLAS threads), in
    ROUNDS turns with the matmul peak and, if ``torch``, PyTorch's iterations."""
    cfg = bench_model(name)
    trainer = Trainer(cfg, TrainConfig(batch_size=batch, max_iters=MAX_ITERS), _random_corpus())
    n = iters or default_iters(cfg, batch)
    per_round = max(1, -(-n // ROUNDS))
    theirs = _TorchRun(cfg, batch, threads) if torch else None
    times: list[float] = []
    torch_times: list[float] = []
    turn_ratios: list[float] = []
    peak = 0.0
    try:
        for _ in range(ROUNDS):
            peak = max(peak, matmul_peak_gflops(threads, repeats=5))
            trainer.set_threads(threads)  # after the peak's BLAS threads
            time.sleep(SETTLE_S)
            for _ in range(warmup if not times else 0):
                trainer.step()
            ours = [trainer.step().step_s for _ in range(per_round)]
            times += ours
            if theirs is not None:
                turn = theirs.times(per_round, warmup=warmup if not torch_times else 0)
                torch_times += turn
                turn_ratios.append(float(np.median(turn) / np.median(ours)))
                time.sleep(SETTLE_S)
        high_water = trainer.arena_stats().high_water
        rss = ProcessMemory().rss(trainer.helper_pids)
    finally:
        trainer.close()
    median = float(np.median(times))
    tokens = trainer.tokens_per_step
    flops = cfg.flops_per_token() * tokens
    gflops = flops / median / 1e9
    torch_s = float(np.median(torch_times)) if torch_times else None
    activation = activation_bytes(cfg, batch, trainer.model.dtype.itemsize)
    return Row(
        preset=name,
        batch=batch,
        threads=threads,
        params=cfg.n_params,
        ms_median=1e3 * median,
        ms_p10=1e3 * float(np.percentile(times, 10)),
        ms_p90=1e3 * float(np.percentile(times, 90)),
        tokens_s=tokens / median,
        gflops=gflops,
        mfu=gflops / peak,
        arena_high_water_mb=high_water / 1e6,
        activation_mb=activation / 1e6,
        arena_ratio=high_water / activation,
        rss_mb=rss / 1e6,
        peak_gflops=peak,
        torch_ms=None if torch_s is None else 1e3 * torch_s,
        torch_mfu=None if torch_s is None else flops / torch_s / 1e9 / peak,
        torch_x=float(np.median(turn_ratios)) if turn_ratios else None,
    )


def _random_corpus() -> Corpus:
    """Random text over VOCAB characters: the data does not change the arithmetic."""
    codes = np.random.default_rng(1).permutation(np.tile(np.arange(VOCAB), 2000))
    return Corpus("".join(chr(33 + int(c)) for c in codes), "random")


class _TorchRun:
    """The same GPT in PyTorch eager on the CPU, AdamW and clipping included."""

    def __init__(self, cfg: ModelConfig, batch: int, threads: int) -> None:
        import torch  # type: ignore[import-not-found]  # optional, only for this comparison

        self.torch, self.threads = torch, threads
        torch.manual_seed(0)
        self.model = _torch_gpt(torch, cfg)
        params = list(self.model.parameters())
        decay = [p for p in params if p.dim() == 2]  # as ours: the matrices, not gains and biases
        groups = [{"params": decay}, {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1)
        self.x = torch.randint(0, VOCAB, (batch, cfg.context))
        self.y = torch.randint(0, VOCAB, (batch, cfg.context))

    def iteration(self) -> None:
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(self.x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, VOCAB), self.y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()

    def times(self, n: int, warmup: int = 0) -> list[float]:
        self.torch.set_num_threads(self.threads)
        for _ in range(warmup):
            self.iteration()
        return [_timed(self.iteration) for _ in range(n)]


def _torch_gpt(torch: Any, cfg: ModelConfig) -> Any:
    nn = torch.nn

    class Block(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            C = cfg.d_model
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc, self.proj = nn.Linear(C, cfg.d_ff), nn.Linear(cfg.d_ff, C)

        def forward(self, x: Any) -> Any:
            B, T, C = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, cfg.n_heads, -1).transpose(1, 2) for t in (q, k, v))
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.proj(nn.functional.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class TorchGPT(nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.wpe = nn.Embedding(cfg.context, cfg.d_model)
            self.h = nn.ModuleList(Block() for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.d_model)
            self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

        def forward(self, idx: Any) -> Any:
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.h:
                x = block(x)
            return self.lm_head(self.ln_f(x))

    return TorchGPT()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="ms/iter, GFLOP/s, MFU and memory for each preset")
    p.add_argument(
        "--presets",
        default=",".join([*PRESETS, NANOGPT]),
        help=f"comma-separated (default: all, and {NANOGPT}: nanoGPT's CPU configuration at batch 12)",
    )
    p.add_argument("--batch", help=f"comma-separated batch sizes (default: {BATCHES})")
    p.add_argument("--threads", default=None, help="comma-separated BLAS threads (default: 1..cores)")
    p.add_argument("--iters", type=int, default=0, help="timed iterations per row (default: by size)")
    p.add_argument("--torch", action="store_true", help="also time PyTorch eager (if installed)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _ints(text: str, flag: str) -> list[int]:
    from engine.cli import UsageError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated whole numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{flag} takes positive whole numbers, not {text!r}")
    return values


def cmd_bench(args: argparse.Namespace, out: TextIO) -> int:
    from engine.cli import UsageError

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    if not presets:  # an empty table and exit 0 would pass for a result
        known = ", ".join([*PRESETS, NANOGPT])
        raise UsageError(f"--presets takes comma-separated names ({known}), not {args.presets!r}")
    for name in presets:
        bench_model(name)  # unknown names fail before anything runs
    if args.iters < 0:
        raise UsageError(f"--iters takes a number of iterations (0: chosen by size), not {args.iters}")
    batches = _ints(BATCHES if args.batch is None else args.batch, "--batch")
    try:
        for batch in batches:
            check_limits(TrainConfig(batch_size=batch).to_dict())  # a batch no run may have
    except ConfigError as e:
        raise UsageError(f"--batch {e.problem}") from None
    # the nanogpt row is nanoGPT's configuration as it is: said, so that it is not read as the
    # --batch asked for
    own_batch = (
        f"the {NANOGPT} row is timed at nanoGPT's own batch of {NANOGPT_BATCH}, not at --batch {args.batch}\n"
        if NANOGPT in presets and args.batch is not None and batches != [NANOGPT_BATCH]
        else ""
    )
    threads = _ints(args.threads, "--threads") if args.threads else list(range(1, cpu_count() + 1))
    if max(threads) > cpu_count():
        raise UsageError(f"--threads must be at most {cpu_count()} (the cores here)")
    if args.torch:
        try:
            import torch
        except ImportError:
            raise UsageError("--torch needs PyTorch in this environment: pip install torch") from None
    blas, cores = blas_info(), cpu_count()
    info = {
        "chargpt": engine.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas.describe(),
        "cores": cores,
        "torch": torch.__version__ if args.torch else None,
    }
    if args.json:
        sys.stderr.write(own_batch)
    peaks = {n: matmul_peak_gflops(n) for n in threads}  # for the header; rows measure their own
    if not args.json:
        out.write(
            f"chargpt {info['chargpt']}, Python {info['python']}, NumPy {info['numpy']}, "
            f"BLAS {info['blas']}, {plural(cores, 'core')}"
            + (f", PyTorch {info['torch']}" if args.torch else "")
            + "\nfloat32 matmul peak at the start: "
            + ", ".join(f"{peaks[n]:.0f} GFLOP/s on {plural(n, 'thread')}" for n in threads)
            + f"\n{own_batch}\n"
        )
        header = (
            f"{'preset':<7}{'batch':>6}{'thr':>4}{'ms med':>9}{'p10':>8}{'p90':>8}{'tok/s':>9}"
            f"{'GF/s':>7}{'MFU':>6}{'arena MB':>10}{'act MB':>8}{'ratio':>6}{'RSS MB':>8}"
            + (f"{'torch ms':>10}{'MFU':>6}{'x':>6}" if args.torch else "")
        )
        out.write(header + "\n")
        out.flush()
    rows = []
    for name in presets:
        for batch in bench_batches(name, batches):
            for n in threads:
                row = bench_row(name, batch, n, args.iters or None, torch=args.torch)
                rows.append(row)
                if not args.json:
                    out.write(_format(row) + "\n")
                    out.flush()
    if args.json:
        out.write(json.dumps({**info, "peak_gflops": peaks, "rows": [asdict(r) for r in rows]}) + "\n")
    return 0


def _format(r: Row) -> str:
    line = (
        f"{r.preset:<7}{r.batch:>6}{r.threads:>4}{r.ms_median:>9.2f}{r.ms_p10:>8.2f}{r.ms_p90:>8.2f}"
        f"{r.tokens_s:>9.0f}{r.gflops:>7.1f}{r.mfu:>6.0%}{r.arena_high_water_mb:>10.1f}"
        f"{r.activation_mb:>8.1f}{r.arena_ratio:>6.2f}{r.rss_mb:>8.0f}"
    )
    if r.torch_ms is not None and r.torch_mfu is not None and r.torch_x is not None:
        line += f"{r.torch_ms:>10.2f}{r.torch_mfu:>6.0%}{r.torch_x:>6.2f}"
    return line
