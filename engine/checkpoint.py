"""Checkpoints: one safetensors file per save, written atomically, validated on load.

A checkpoint holds every parameter under its GPT-2 name (``wte``, ``h.0.attn.c_attn.weight``,
…), AdamW's moments as ``optim.m.<name>`` and ``optim.v.<name>``, and one JSON string of
metadata under the ``chargpt`` key (safetensors metadata maps str to str): format and version,
both configs, the vocabulary, the iteration, the optimizer step, the data generator's state,
the best validation loss, the corpus (name, where it came from, sha256), the app version and
the creation time. safetensors holds no pickle, so opening a file someone sent cannot run code.

Resume is bit-exact: the evaluation and sampling generators are derived from the seed and
the iteration, so the data generator's state is the only random state to carry.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import safetensors.numpy
from numpy.typing import NDArray

import engine
from engine.config import ModelConfig, TrainConfig
from engine.data import BUILTIN, AbsentText, CharTokenizer, Corpus, CorpusError
from engine.errors import InputError, read_failure, write_failure
from engine.memory import check_memory
from engine.model import GPT
from engine.runlog import CHECKPOINTS, is_count, run_dir_of
from engine.trainer import Trainer, TrainerState

FORMAT = "chargpt-checkpoint"
WEIGHTS_FORMAT = "chargpt-weights"
VERSION = 1
META_KEY = "chargpt"
# Fields of TrainConfig a resumed run may change: none of them alters the steps' arithmetic
# except max_iters, which sets the cosine schedule (so resume with the run's own total).
RESUMABLE = ("max_iters", "eval_interval", "eval_iters", "sample_interval", "checkpoint_interval")

Array = NDArray[Any]
_UMASK = os.umask(0o022)  # read it (the only way is to set it), then put it back
os.umask(_UMASK)


class CheckpointError(InputError):
    """A checkpoint that cannot be written or read; the message is one line for a person."""


class CorpusNeeded(CheckpointError):
    """The text a checkpoint was trained on cannot be reopened: the caller says how to give it."""


@dataclass(frozen=True)
class Checkpoint:
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    vocabulary: list[str]
    iteration: int
    metadata: dict[str, Any]  # the whole JSON metadata
    tensors: dict[str, Array]  # parameters and moments, by file name

    @property
    def params(self) -> dict[str, Array]:
        return {name: self.tensors[name] for name, _ in self.model_cfg.param_shapes()}

    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer(self.vocabulary)

    def model(self) -> GPT:
        """The GPT with this checkpoint's parameters, ready to sample from."""
        gpt = GPT(self.model_cfg, dtype=np.dtype(self.train_cfg.dtype))
        for name, value in self.params.items():
            gpt.params[name][...] = value
        return gpt

    def trainer_state(self) -> TrainerState:
        m = self.metadata
        best = m["best_val_loss"]
        return TrainerState(
            iteration=int(m["iteration"]),
            optimizer_step=int(m["optimizer_step"]),
            data_rng=m["rng"]["data"],
            best_val_loss=math.inf if best is None else float(best),
        )


# -- save -----------------------------------------------------------------------
def save(trainer: Trainer, path: str | Path, run_dir: str | Path | None = None) -> Path:
    """Write ``trainer``'s whole state to ``path`` atomically; return the path. ``run_dir``:
    the run folder it trained in, recorded so that a copy kept elsewhere still finds its curves."""
    path = Path(path)
    state = trainer.state()
    corpus = trainer.corpus
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": trainer.model_cfg.to_dict(),
        "train": trainer.train_cfg.to_dict(),
        "vocabulary": corpus.tokenizer.chars,
        "iteration": state.iteration,
        "optimizer_step": state.optimizer_step,
        "rng": {"data": state.data_rng},
        "best_val_loss": state.best_val_loss if math.isfinite(state.best_val_loss) else None,
        "corpus": corpus_record(corpus),
        "run_dir": _absolute(run_dir),
        "app_version": engine.__version__,
        "created": _now(),
    }
    write_atomic(
        path, _safetensors_writer(trainer.state_tensors(), {META_KEY: json.dumps(meta)}), "checkpoint"
    )
    return path


def _safetensors_writer(
    tensors: Mapping[str, NDArray[Any]], metadata: dict[str, str]
) -> Callable[[IO[bytes]], None]:
    """What writes ``tensors`` as a safetensors file, each from its own memory. The library's
    save builds the whole file as one bytes object from copies of the tensors: twice the file's
    size at the peak, 450 MB more for the large preset at every save, which the memory a run is
    allowed did not leave room for. Reading stays with the library, which checks the file."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, array in tensors.items():
        end = offset + array.nbytes
        header[name] = {
            "dtype": _DTYPE_CODES[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the tensors start 8-byte aligned, as the library's own files

    def write(f: IO[bytes]) -> None:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in tensors.values():  # little-endian and C order: views, not copies, here
            f.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).data)

    return write


def corpus_record(corpus: Corpus) -> dict[str, Any]:
    """Where a corpus came from: 'builtin', an absolute file path, or None (built from a string)."""
    from engine.default_corpus import NAME as BUILTIN_NAME

    if isinstance(corpus, AbsentText):
        return dict(corpus.record)

    if corpus.path is not None:
        source: str | None = str(corpus.path)
    else:
        source = BUILTIN if corpus.name == BUILTIN_NAME else None
    return {"name": corpus.name, "path": source, "sha256": corpus.sha256, "characters": len(corpus.tokens)}


def write_atomic(path: Path, data: bytes | Callable[[IO[bytes]], object], what: str = "checkpoint") -> None:
    """Write ``data`` (bytes, or a function that writes them to a file) to a temp file beside
    ``path``, fsync, then rename over ``path``.

    Any failure raises CheckpointError and leaves an earlier file at ``path`` as it was
    and no temp file behind.
    """
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise CheckpointError(_write_failure(what, path, e)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes it private; be an ordinary file
            if isinstance(data, bytes):
                f.write(data)
            else:
                data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if not isinstance(e, Exception):
            raise  # KeyboardInterrupt, SystemExit: cleaned up, passed on
        raise CheckpointError(_write_failure(what, path, e)) from None
    _fsync_folder(folder)


# A checkpoint's temp file as write_atomic names it: mkstemp's 8 characters between the
# checkpoint's dotted name and ".tmp".
_CHECKPOINT_TEMP = re.compile(r"\..+\.safetensors\.[a-z0-9_]{8}\.tmp")
STALE_TEMP_S = 600.0  # a checkpoint takes seconds to write: a temp file this old has no writer


def remove_stale_temps(folder: Path) -> None:
    """Take away the temp files of checkpoint writes that were cut short by the process dying
    (kill -9, a crash, the power) from a run's ``folder`` of checkpoints. Hidden by
    their dot, they stayed for good: 17 MB each for medium, 230 MB for large. Only names that
    write_atomic gives, and only ones older than STALE_TEMP_S: another process's write into
    the same folder (an Export beside a running chargpt train) is seconds old."""
    now = datetime.now(UTC).timestamp()
    with contextlib.suppress(OSError):  # a folder it cannot list or change keeps its files
        for entry in os.scandir(folder):
            if not _CHECKPOINT_TEMP.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S:
                    os.unlink(entry.path)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_failure(what: str, path: Path, e: BaseException) -> str:
    return f"cannot save the {what} to {path}: {write_failure(path, e)}"


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


# -- load -----------------------------------------------------------------------
def load(path: str | Path, model_cfg: ModelConfig | None = None, *, exported: bool = False) -> Checkpoint:
    """Read and validate a checkpoint. With ``model_cfg``, it must also be of that model.
    ``exported``: a file of ``export_weights`` will do too (to sample from: it has no
    optimizer state nor place in the data, so it cannot resume)."""
    path = Path(path)
    header, meta = _read_header(path)
    exported = exported and meta.get("format") == WEIGHTS_FORMAT
    cfg, train_cfg = _settings(path, meta, exported)
    try:
        vocabulary = [str(c) for c in meta["vocabulary"]]
        iteration = _count(meta, "iteration")
        if not exported:
            if _count(meta, "optimizer_step") > iteration:  # a step skipped (not finite) counts no update
                raise ValueError(f"optimizer_step {meta['optimizer_step']} is past iteration {iteration}")
            dict(meta["rng"]["data"])
            best = meta.setdefault("best_val_loss", None)
            if best is not None and (isinstance(best, bool) or not isinstance(best, int | float)):
                raise ValueError(f"best_val_loss is {best!r}, not a number")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path.name} has damaged metadata ({e}); use another checkpoint") from None
    if (
        len(vocabulary) != cfg.vocab_size
        or sorted(set(vocabulary)) != vocabulary
        or any(len(c) != 1 for c in vocabulary)
    ):
        raise CheckpointError(
            f"{path.name}: its vocabulary of {len(vocabulary)} characters does not fit its model "
            f"(vocab_size {cfg.vocab_size}); use another checkpoint"
        )
    if model_cfg is not None and model_cfg != cfg:
        raise CheckpointError(
            f"{path.name} is a {_describe(cfg)} model, not the expected {_describe(model_cfg)}; "
            "choose a checkpoint of this model or change the settings"
        )
    if exported:  # the parameters alone, named as PyTorch does
        expected = {torch_name(name): shape for name, shape in cfg.param_shapes()}
    else:
        expected = expected_tensors(cfg)
    _check_header_shapes(path, header, expected, train_cfg.dtype)
    try:
        tensors = safetensors.numpy.load_file(path)
    except Exception as e:  # the Rust reader's own error types
        raise CheckpointError(f"{path.name} cannot be read as a checkpoint ({e}); use another file") from None
    for name, array in tensors.items():
        if not np.isfinite(array).all():
            raise CheckpointError(
                f"{path.name}: tensor {name} holds NaN or infinite values (training had diverged, or "
                "the file is damaged); use an earlier checkpoint"
            )
    if exported:
        tensors = {name: tensors[torch_name(name)] for name, _ in cfg.param_shapes()}
    return Checkpoint(cfg, train_cfg, vocabulary, iteration, meta, tensors)


def _count(meta: Mapping[str, Any], key: str) -> int:
    """``meta[key]``, which must be a whole number, 0 or more: a negative iteration resumed
    into a negative learning rate, and gradient ascent."""
    value = meta[key]
    if not is_count(value):
        raise ValueError(f"{key} is {value!r}, not a count of 0 or more")
    return int(value)


def read_settings(path: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """A checkpoint's model and training settings, from its header alone (no tensors read)."""
    path = Path(path)
    return _settings(path, _read_header(path)[1])


def _absolute(folder: str | Path | None) -> str | None:
    """``folder`` as an absolute path; None for none, or for one relative to a working folder
    that was deleted, which names no place."""
    if folder is None:
        return None
    try:
        return str(Path(folder).resolve())
    except OSError:
        return None


def run_folders(path: str | Path) -> list[Path]:
    """The run folders whose records may lead to a checkpoint's model, likeliest first: the one
    it sits in, then the one it recorded it trained in, if that is another (a copy kept away
    from its run). Whether a run did lead to it is ``runlog.led_to``'s to say."""
    beside = run_dir_of(path)
    with contextlib.suppress(CheckpointError, OSError):  # a header it cannot read: no other
        recorded = recorded_run_dir(path)
        if recorded is not None and recorded != beside.resolve():
            return [beside, recorded]
    return [beside]


def recorded_run_dir(path: str | Path) -> Path | None:
    """The run folder a checkpoint recorded it trained in (None: none recorded), from its
    header alone; it may have been moved or deleted since."""
    folder = _read_header(Path(path))[1].get("run_dir")
    return Path(folder) if isinstance(folder, str) and folder else None


def _settings(path: Path, meta: dict[str, Any], exported: bool = False) -> tuple[ModelConfig, TrainConfig]:
    """The settings in a checkpoint's metadata (or an export's, if ``exported``), once its
    format and version are ours."""
    version = meta.get("version")
    if meta.get("format") == WEIGHTS_FORMAT and not exported:
        raise CheckpointError(
            f"{path.name} holds exported weights only, without the training state; "
            "use the checkpoint it was exported from"
        )
    if meta.get("format") != (WEIGHTS_FORMAT if exported else FORMAT) or not isinstance(version, int):
        raise CheckpointError(
            f"{path.name} is not a CharGPT checkpoint (unknown format); choose another file"
        )
    if version != VERSION:
        advice = "update CharGPT Studio to open it" if version > VERSION else "it is from an older app"
        raise CheckpointError(
            f"{path.name} is checkpoint format version {version}, this app reads version {VERSION}; {advice}"
        )
    try:
        return ModelConfig(**meta["model"]), TrainConfig(**meta["train"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path.name} has damaged metadata ({e}); use another checkpoint") from None


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``cfg`` holds, with its shape."""
    shapes = dict(cfg.param_shapes())
    out = dict(shapes)
    for kind in ("m", "v"):
        out.update({f"optim.{kind}.{name}": shape for name, shape in shapes.items()})
    return out


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The safetensors header and our metadata, checking the file is whole."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; check the path")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint; choose a .safetensors file")
    not_ckpt = f"{path.name} is not a checkpoint (not a safetensors file); choose a .safetensors checkpoint"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(not_ckpt)
            (n,) = struct.unpack("<Q", head)
            if n > size:  # a header longer than the file: cut short, or not ours at all
                start = f.read(1)
                raise CheckpointError(_truncated(path) if start == b"{" else not_ckpt)
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {read_failure(Path(path), e)}") from None
    if len(raw) < n:
        raise CheckpointError(_truncated(path) if raw[:1] == b"{" else not_ckpt)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(not_ckpt) from None
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError(not_ckpt) from None
    if 8 + n + end > size:
        raise CheckpointError(_truncated(path))
    try:
        meta = json.loads(header.get("__metadata__", {})[META_KEY])
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{path.name} is a safetensors file but not a CharGPT checkpoint; choose a checkpoint"
        ) from None
    return header, meta


def _truncated(path: Path) -> str:
    return (
        f"{path.name} is truncated or damaged (the file is shorter than its header says); "
        "use an earlier checkpoint"
    )


_DTYPE_CODES = {"float32": "F32", "float64": "F64"}


def _check_header_shapes(
    path: Path, header: dict[str, Any], expected: dict[str, tuple[int, ...]], dtype: str
) -> None:
    missing = [name for name in expected if name not in header]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{path.name} lacks tensor {missing[0]}{more}; use another checkpoint")
    for name, shape in expected.items():
        entry = header[name]
        if tuple(entry.get("shape", ())) != shape:
            raise CheckpointError(
                f"{path.name}: tensor {name} has shape {tuple(entry.get('shape', ()))}, but its config "
                f"needs {shape}; the file is damaged or from another model"
            )
        if entry.get("dtype") != _DTYPE_CODES[dtype]:
            raise CheckpointError(
                f"{path.name}: tensor {name} is {entry.get('dtype')}, its config says {dtype}; "
                "the file is damaged"
            )


def _describe(cfg: ModelConfig) -> str:
    return (
        f"{cfg.n_layers}-layer × {cfg.d_model} (heads {cfg.n_heads}, ff {cfg.d_ff}, "
        f"context {cfg.context}, vocab {cfg.vocab_size})"
    )


# -- resume ---------------------------------------------------------------------
def restore(
    path: str | Path,
    corpus: Corpus | None = None,
    *,
    train_overrides: Mapping[str, Any] | None = None,
    memory_check: bool = True,
    absent_text: bool = False,
) -> tuple[Trainer, list[str]]:
    """A Trainer that continues exactly where the checkpoint left off, and warnings to show.

    Without ``corpus`` the recorded one is reopened (CorpusNeeded where it cannot be). With
    ``absent_text`` the text is not looked for: the Trainer holds its AbsentText, to sample and
    export but not to train. A corpus whose text differs is allowed (with a warning); it is
    always read with the checkpoint's vocabulary. ``train_overrides`` may change only the
    fields in RESUMABLE (``max_iters`` is the new total). Without ``memory_check``, a run too
    big to train here loads all the same, to sample and export.
    """
    ckpt = load(path)
    if Path(path).parent.name == CHECKPOINTS:  # a run's: a write there killed half-way left its temp file
        remove_stale_temps(Path(path).parent)
    warnings: list[str] = []
    record = ckpt.metadata.get("corpus") or {}
    if absent_text:
        corpus = AbsentText(record, ckpt.tokenizer())
    elif corpus is None:
        corpus = _reopen_corpus(Path(path), record)
    if record.get("sha256") and corpus.sha256 != record["sha256"]:
        warnings.append(
            f"the corpus differs from the one this checkpoint was trained on ({corpus.name} is not "
            f"the recorded {record.get('name', '?')}, sha256 {record['sha256'][:12]}…); resuming anyway"
        )
    if corpus.tokenizer.chars != ckpt.vocabulary:
        try:
            again = Corpus(corpus.text, corpus.name, ckpt.tokenizer(), path=corpus.path)
        except CorpusError as e:
            raise CheckpointError(f"cannot resume on {corpus.name}: {e}") from None
        again.label = corpus.label  # its refusals name the file as it was given
        corpus = again
    overrides = dict(train_overrides or {})
    fixed = sorted(set(overrides) - set(RESUMABLE))
    if fixed:
        raise CheckpointError(
            f"{', '.join(fixed)} cannot change when resuming (the checkpoint fixes them); "
            "start a new run to change them"
        )
    train_cfg = ckpt.train_cfg
    if overrides:
        try:
            train_cfg = TrainConfig(**{**train_cfg.to_dict(), **overrides})
        except (TypeError, ValueError) as e:
            raise CheckpointError(str(e)) from None
    if memory_check:
        check_memory(ckpt.model_cfg, train_cfg, resuming=True)
    try:
        trainer = Trainer(ckpt.model_cfg, train_cfg, corpus, memory_check=False)  # checked above
    except ValueError as e:
        raise CheckpointError(f"cannot resume on {corpus.name}: {e}") from None
    trainer.load_state(ckpt.tensors, ckpt.trainer_state())
    return trainer, warnings


def _reopen_corpus(path: Path, record: Mapping[str, Any]) -> Corpus:
    source = record.get("path")
    if source == BUILTIN:
        from engine.default_corpus import load_default_corpus

        return load_default_corpus()
    if not source:
        raise CorpusNeeded(
            f"{path.name} was trained on text that was not read from a file ({record.get('name', '?')})"
        )
    if not Path(source).is_file():
        raise CorpusNeeded(f"the corpus this checkpoint was trained on is gone ({source})")
    return Corpus.from_file(source)


# -- export ---------------------------------------------------------------------
def torch_name(name: str) -> str:
    """Our parameter name as in a nanoGPT / PyTorch state_dict."""
    if name == "lm_head.weight":
        return name
    if name in ("wte", "wpe"):
        return f"transformer.{name}.weight"
    return f"transformer.{name}"


def export_weights(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write the parameters alone, with nanoGPT/PyTorch names, atomically; return the path.

    Linear weights are (out, in), as ``torch.nn.Linear`` keeps them. nanoGPT's ``GPT`` of the
    same shape takes them (``load_state_dict``) once its ``lm_head`` is untied from ``wte``,
    which it shares, and its GELU is the tanh approximation, which this engine uses: else
    every key matches and the model is wrong (the head is written over the embedding). The
    metadata says both (``activation``, ``lm_head``), and README.md how to load the file.
    """
    if Path(out_path).resolve() == Path(checkpoint_path).resolve():
        raise CheckpointError(
            f"{out_path} is the checkpoint being exported: writing the weights alone over it would "
            "lose its optimizer state and place in the data; give the export another name"
        )
    c = load(checkpoint_path)
    return _write_weights(out_path, c.model_cfg, c.train_cfg, c.vocabulary, c.iteration, c.params)


def save_weights(trainer: Trainer, path: str | Path) -> Path:
    """``export_weights`` from a trainer as it is now (between iterations)."""
    t, vocabulary = trainer, trainer.corpus.tokenizer.chars
    return _write_weights(path, t.model_cfg, t.train_cfg, vocabulary, t.iteration, t.model.params)


def _write_weights(
    path: str | Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    vocabulary: list[str],
    iteration: int,
    params: Mapping[str, NDArray[Any]],
) -> Path:
    meta = {
        "format": WEIGHTS_FORMAT,
        "version": VERSION,
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "vocabulary": vocabulary,
        "iteration": iteration,
        # what the names do not say, and another GPT-2 implementation may do otherwise
        "activation": "gelu_tanh",
        "lm_head": "untied",
        "app_version": engine.__version__,
        "created": _now(),
    }
    tensors = {torch_name(name): value for name, value in params.items()}
    write_atomic(
        Path(path), _safetensors_writer(tensors, {"format": "pt", META_KEY: json.dumps(meta)}), "weights"
    )
    return Path(path)
