from dataclasses import replace
from pathlib import Path

import pytest

from engine.blas import set_blas_threads
from engine.config import PRESETS, ModelConfig, TrainConfig
from engine.data import Corpus

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"

VERSE = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles "
    "and by opposing end them, to die."
)[:200]


@pytest.fixture
def verse_corpus() -> Corpus:
    return Corpus(VERSE, "verse")


@pytest.fixture
def one_thread():
    set_blas_threads(1)
    yield
    set_blas_threads(1)


def tiny_configs(corpus: Corpus, **train_overrides) -> tuple[ModelConfig, TrainConfig]:
    preset = PRESETS["tiny"]
    return preset.model_for(corpus.vocab_size), replace(preset.train, **train_overrides)


@pytest.fixture
def run_in_tmp_path(tmp_path, monkeypatch):
    """For command-line tests: runs/ and other outputs land in the test's own folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    path = tmp_path / "verse.txt"
    path.write_text(VERSE * 20, encoding="utf-8")
    return path
