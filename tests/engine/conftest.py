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
