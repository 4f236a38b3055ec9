"""The ``chargpt`` command line: train, info (and the commands that build on them).

Exit codes: 0 done, 1 training failed (loss not finite), 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TextIO

import numpy as np

import engine
from engine.blas import blas_info, cpu_count, set_blas_threads
from engine.config import PRESETS, ModelConfig, PresetError, TrainConfig, format_count, get_preset
from engine.data import Corpus, CorpusError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad input from the person at the keyboard: printed as one line, exit 2."""


# -- shared argument groups ----------------------------------------------------
MODEL_OVERRIDES = {  # flag -> ModelConfig field
    "layers": "n_layers",
    "heads": "n_heads",
    "dims": "d_model",
    "ff": "d_ff",
    "context": "context",
}
TRAIN_OVERRIDES = {  # flag -> TrainConfig field
    "batch": "batch_size",
    "iters": "max_iters",
    "lr": "lr",
    "min_lr": "min_lr",
    "warmup": "warmup_iters",
    "weight_decay": "weight_decay",
    "clip": "grad_clip",
    "seed": "seed",
    "eval_every": "eval_interval",
    "eval_iters": "eval_iters",
    "sample_every": "sample_interval",
}


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESETS)} (default: tiny)")
    p.add_argument("--corpus", help="a UTF-8 text file (default: the built-in corpus)")
    m = p.add_argument_group("model (overrides the preset)")
    for flag in MODEL_OVERRIDES:
        m.add_argument(f"--{flag.replace('_', '-')}", type=int, dest=flag)
    t = p.add_argument_group("training (overrides the preset)")
    for flag, field in TRAIN_OVERRIDES.items():
        kind = float if field in ("lr", "min_lr", "weight_decay", "grad_clip") else int
        t.add_argument(f"--{flag.replace('_', '-')}", type=kind, dest=flag)
    p.add_argument("--threads", default="auto", help="BLAS threads: a number, or auto (default)")


def load_corpus(path: str | None) -> Corpus:
    if path:
        return Corpus.from_file(path)
    from engine.default_corpus import load_default_corpus

    return load_default_corpus()


def build_configs(args: argparse.Namespace, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    preset = get_preset(args.preset)
    model_kw = {f: getattr(args, a) for a, f in MODEL_OVERRIDES.items() if getattr(args, a) is not None}
    train_kw = {f: getattr(args, a) for a, f in TRAIN_OVERRIDES.items() if getattr(args, a) is not None}
    try:
        model_cfg = replace(preset.model_for(vocab_size), **model_kw)
        train_cfg = replace(preset.train, **train_kw)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return model_cfg, train_cfg


def apply_threads(spec: str) -> int:
    """Set BLAS threads from '--threads' ('auto' leaves the library's choice); return the count."""
    if spec == "auto":
        return blas_info().num_threads
    try:
        n = int(spec)
    except ValueError:
        raise UsageError(f"--threads takes a number or 'auto', not {spec!r}") from None
    if not 1 <= n <= cpu_count():
        raise UsageError(f"--threads must be between 1 and {cpu_count()} (the cores here), got {n}")
    return set_blas_threads(n)


# -- chargpt train -------------------------------------------------------------
def cmd_train(args: argparse.Namespace, out: TextIO) -> int:
    from engine.trainer import Trainer

    corpus = load_corpus(args.corpus)
    model_cfg, train_cfg = build_configs(args, corpus.vocab_size)
    threads = apply_threads(args.threads)
    trainer = Trainer(model_cfg, train_cfg, corpus)
    log_every = args.log_every or max(1, train_cfg.max_iters // 20)
    say = _printer(out, args.json)
    say(
        f"training {args.preset}: {model_cfg.n_layers} layers × {model_cfg.d_model}, "
        f"{format_count(model_cfg.n_params)} params, on {corpus.name} "
        f"({len(corpus.tokens):,} chars, vocab {corpus.vocab_size}), {threads} BLAS threads"
    )
    step_times: list[float] = []
    t_start = time.perf_counter()
    last_loss = math.nan
    for m in trainer.run():
        step_times.append(m.step_s)
        last_loss = m.loss
        if not math.isfinite(m.loss):
            say(f"iter {m.iteration}: loss is {m.loss}; lower the learning rate (--lr) and try again")
            return EXIT_FAILED
        if m.iteration % log_every == 0 or m.iteration == train_cfg.max_iters:
            ms = 1e3 * float(np.median(step_times[-log_every:]))
            eta = ms / 1e3 * (train_cfg.max_iters - m.iteration)
            say(
                f"iter {m.iteration:>6}/{train_cfg.max_iters}  loss {m.loss:.4f}  "
                f"{ms:7.2f} ms/iter  ETA {format_duration(eta)}"
            )
    val_loss = trainer.evaluate("val")
    wall = time.perf_counter() - t_start
    say(f"validation loss {val_loss:.4f} after {trainer.iteration} iterations ({format_duration(wall)})")
    sample = trainer.generate("", args.sample_chars, temperature=0.8, top_k=None, seed=train_cfg.seed)
    say("sample:\n" + sample)
    if args.json:
        summary = {
            "preset": args.preset,
            "params": model_cfg.n_params,
            "iters": trainer.iteration,
            "train_loss": last_loss,
            "val_loss": val_loss,
            "ms_per_iter": 1e3 * float(np.median(step_times)),
            "threads": threads,
            "wall_s": wall,
            "corpus": corpus.name,
            "model": model_cfg.to_dict(),
            "train": train_cfg.to_dict(),
        }
        out.write(json.dumps(summary) + "\n")
    return EXIT_OK


def _printer(out: TextIO, to_stderr: bool) -> Callable[[str], None]:
    """Progress goes to stdout, or to stderr when stdout carries JSON for a script."""
    stream = sys.stderr if to_stderr else out

    def say(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return say


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# -- chargpt info --------------------------------------------------------------
def info_dict() -> dict[str, Any]:
    b = blas_info()
    return {
        "chargpt": engine.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cores": cpu_count(),
        "blas": {
            "library": b.library,
            "version": b.version,
            "threading_layer": b.threading_layer,
            "threads": b.num_threads,
        },
        "presets": {
            name: {
                **p.model.to_dict(),
                "params_at_vocab_65": p.model_for(65).n_params,
                "batch_size": p.train.batch_size,
                "max_iters": p.train.max_iters,
                "lr": p.train.lr,
            }
            for name, p in PRESETS.items()
        },
    }


def cmd_info(args: argparse.Namespace, out: TextIO) -> int:
    info = info_dict()
    if args.json:
        out.write(json.dumps(info, indent=2) + "\n")
        return EXIT_OK
    b = info["blas"]
    out.write(
        f"chargpt {info['chargpt']}  Python {info['python']}  NumPy {info['numpy']}\n"
        f"{info['platform']}, {info['cores']} cores\n"
        f"BLAS: {b['library']} {b['version']} ({b['threading_layer']}), {b['threads']} threads\n\n"
        "presets (parameters at a 65-character vocabulary):\n"
    )
    for name, p in PRESETS.items():
        m = p.model_for(65)
        out.write(
            f"  {name:<7} {m.n_layers} layers × {m.d_model:<4} heads {m.n_heads:<3} ff {m.d_ff:<5}"
            f"context {m.context:<4} {format_count(m.n_params):>7} params  "
            f"batch {p.train.batch_size}, {p.train.max_iters} iters, lr {p.train.lr:g}\n"
        )
    return EXIT_OK


# -- entry point ---------------------------------------------------------------
Command = Callable[[argparse.Namespace, TextIO], int]
COMMANDS: dict[str, Command] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargpt", description="Train and sample character-level GPTs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model and print its progress")
    add_config_arguments(p)
    p.add_argument("--log-every", type=int, default=0, help="progress line every N iterations")
    p.add_argument("--sample-chars", type=int, default=200, help="length of the sample at the end")
    p.add_argument("--json", action="store_true", help="end with one JSON line summing up the run")
    COMMANDS["train"] = cmd_train

    p = sub.add_parser("info", help="versions, BLAS library and threads, presets")
    p.add_argument("--json", action="store_true")
    COMMANDS["info"] = cmd_info
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args, out)
    except (UsageError, PresetError, CorpusError) as e:
        sys.stderr.write(f"chargpt: error: {e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("chargpt: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`chargpt train | head`); quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """The console script."""
    sys.exit(main())
