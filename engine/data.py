"""Text in, tokens out: the character tokenizer, the corpus and its batches."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import InputError, read_failure

TOKEN_DTYPE = np.uint16
MAX_VOCAB = int(np.iinfo(TOKEN_DTYPE).max) + 1
VAL_FRACTION = 0.1
BUILTIN = "builtin"  # the corpus "path" a checkpoint records for the built-in corpus
# Bytes at a file's start that tell UTF-16 without a byte-order mark from binary: a few KB
UTF16_SNIFF = 4096
# Characters per step when text becomes code points: a 4 MB UTF-32 copy of one chunk at a
# time, never of the whole text. Vectorised, a 100 MB text opens in 2.2 s rather than 12.
ENCODE_CHUNK = 1 << 20


class CorpusError(InputError, ValueError):
    """A corpus that cannot be trained on; the message is one line meant for a person."""


class UnknownCharactersError(CorpusError):
    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        shown = " ".join(map(show_char, self.chars[:10]))
        more = f" and {len(self.chars) - 10} more" if len(self.chars) > 10 else ""
        super().__init__(
            f"characters not in the model's vocabulary: {shown}{more}; use only characters of its corpus"
        )


def show_char(c: str) -> str:
    """A character as a message quotes it: 'e', or 'é' (U+00E9) beside the 'é' of an e and a
    combining accent (e U+0301), which look the same."""
    return repr(c) if c.isascii() else f"{c!r} (U+{ord(c):04X})"


class CharTokenizer:
    """One token per distinct character, numbered in sorted order. ``source`` is what the
    characters come from, as a refusal names it."""

    def __init__(self, chars: Iterable[str], source: str = "the text") -> None:
        self.chars: list[str] = sorted(set(chars))
        if len(self.chars) > MAX_VOCAB:
            raise CorpusError(
                f"{source} has {len(self.chars):,} distinct characters, more than the "
                f"{MAX_VOCAB:,} a token can hold; use a text with fewer distinct characters"
            )
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("a vocabulary holds single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        # code point -> token, -1 for the others: the last entry lies past every code point of
        # the vocabulary, and take(mode="clip") sends every larger one there
        codes = [ord(c) for c in self.chars]
        self._codes = np.array(codes, dtype=np.uint32)  # token -> code point, for decode_array
        self._table = np.full(max(codes, default=0) + 2, -1, dtype=np.int32)
        self._table[codes] = np.arange(len(codes))

    @classmethod
    def from_text(cls, text: str, source: str = "the text") -> CharTokenizer:
        seen = np.zeros(0, dtype=bool)  # by code point
        for codes in _code_points(text):
            present = np.bincount(codes) > 0
            if len(present) > len(seen):
                present[: len(seen)] |= seen
                seen = present
            else:
                seen[: len(present)] |= present
        return cls(map(chr, np.flatnonzero(seen)), source)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> NDArray[np.uint16]:
        tokens = np.empty(len(text), dtype=TOKEN_DTYPE)
        done = 0
        for codes in _code_points(text):
            ids = self._table.take(codes, mode="clip")
            if ids.min() < 0:
                raise UnknownCharactersError(c for c in set(text) if c not in self.stoi)
            tokens[done : done + len(ids)] = ids
            done += len(ids)
        return tokens

    def decode(self, tokens: Iterable[int]) -> str:
        return "".join(self.chars[int(t)] for t in tokens)

    def decode_array(self, tokens: NDArray[np.integer]) -> str:
        """``decode`` for a whole token array, vectorised: a 100 MB text in about a second."""
        return "".join(
            self._codes[tokens[i : i + ENCODE_CHUNK]].tobytes().decode("utf-32-le", "surrogatepass")
            for i in range(0, len(tokens), ENCODE_CHUNK)
        )


def _code_points(text: str) -> Iterator[NDArray[np.uint32]]:
    """The text's code points, ENCODE_CHUNK at a time."""
    for i in range(0, len(text), ENCODE_CHUNK):
        # surrogatepass: a lone surrogate, which a str may hold (decoded UTF-8 never does), is
        # a code point like any other rather than an error
        chunk = text[i : i + ENCODE_CHUNK].encode("utf-32-le", "surrogatepass")
        yield np.frombuffer(chunk, dtype=np.uint32)


class Corpus:
    """A text, its tokens and a 90/10 train/validation split."""

    def __init__(
        self,
        text: str,
        name: str = "text",
        tokenizer: CharTokenizer | None = None,
        *,
        path: str | Path | None = None,  # the file it was read from, if any, as the user gave it
    ) -> None:
        self.name = name
        # a refusal names the file by its path as given (/dev/null, not "null"), as read_text's do
        self.label = name if path is None else str(path)
        self.path = None if path is None else Path(path).resolve()  # checkpoints record it whole
        if not text:
            raise CorpusError(f"{self.label} is empty; choose a text file with some writing in it")
        self.tokenizer = tokenizer or CharTokenizer.from_text(text, self.label)
        self.tokens = self.tokenizer.encode(text)
        if self.tokens.min() == self.tokens.max():  # its loss would be 0 from the first iteration
            raise CorpusError(
                f"{self.label} holds only one distinct character, {show_char(text[0])}, so there is "
                "nothing to learn from it; choose a text with at least two different characters"
            )
        digest = hashlib.sha256()
        for i in range(0, len(text), ENCODE_CHUNK):  # not a whole UTF-8 copy of the text at once
            digest.update(text[i : i + ENCODE_CHUNK].encode("utf-8"))
        self.sha256 = digest.hexdigest()
        # The text itself is not kept: the tokens hold it, and it would be a second copy of
        # the corpus for as long as training runs (111 MB of a 111 MB file's 481 MB).
        n_val = int(len(self.tokens) * VAL_FRACTION)
        self.train = self.tokens[: len(self.tokens) - n_val]
        self.val = self.tokens[len(self.tokens) - n_val :]

    @classmethod
    def from_file(cls, path: str | Path, tokenizer: CharTokenizer | None = None) -> Corpus:
        return cls(read_text(path), Path(path).name, tokenizer, path=path)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def text(self) -> str:
        """The text again, decoded from the tokens (rarely needed: to read it with another
        vocabulary)."""
        return self.tokenizer.decode_array(self.tokens)

    def check_context(self, context: int, advice: str = "use a longer text or a smaller context") -> None:
        """Raise CorpusError, ending with ``advice``, unless the text holds one training window."""
        if len(self.tokens) < context + 1:
            raise CorpusError(
                f"{self.label} has {len(self.tokens)} characters, fewer than the context "
                f"{context} + 1 that one training example needs; {advice}"
            )

    def split(self, name: str, context: int) -> NDArray[np.uint16]:
        """The train or val tokens. A validation part too short for one window
        (a very short text) falls back to the whole text."""
        part = self.train if name == "train" else self.val
        return part if len(part) >= context + 1 else self.tokens

    def batch(
        self, rng: np.random.Generator, split: str, batch_size: int, context: int
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(B, T) inputs and (B, T) next-character targets from random offsets."""
        data = self.split(split, context)
        starts = rng.integers(0, len(data) - context, size=batch_size)
        rows = starts[:, None] + np.arange(context + 1)  # (B, T + 1)
        window = data[rows].astype(np.intp)
        return window[:, :-1], window[:, 1:]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "characters": len(self.tokens),
            "vocab_size": self.vocab_size,
            "sha256": self.sha256,
        }


class AbsentText(Corpus):
    """The text a checkpoint was trained on, where it is not on this machine (a checkpoint
    someone sent): what the checkpoint records of it (engine.checkpoint.corpus_record), and its
    vocabulary. That is all that sampling from the model and exporting it need; there is
    nothing to train on or evaluate, and its checkpoints record the text as the original did."""

    def __init__(self, record: Mapping[str, Any], tokenizer: CharTokenizer) -> None:
        # not Corpus.__init__: there is no text to read
        self.record = dict(record)
        self.name = self.label = str(record.get("name") or "text")
        path = record.get("path")
        self.path = Path(path) if path and path != BUILTIN else None
        self.tokenizer = tokenizer
        self.sha256 = str(record.get("sha256") or "")
        self.tokens = self.train = self.val = np.zeros(0, dtype=np.uint16)

    def check_context(self, context: int, advice: str = "") -> None:
        pass  # unknowable without the text; batch refuses

    def batch(
        self, rng: np.random.Generator, split: str, batch_size: int, context: int
    ) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        raise CorpusError(f"{self.name} is not on this machine; open it to train this model on")


def read_text(path: str | Path) -> str:
    """The text of a file in UTF-8, or in UTF-16 if it starts with a UTF-16 byte-order mark
    (Windows Notepad's "Unicode"), without its byte-order mark, and with Windows line ends (CRLF)
    and classic Mac OS ones (a lone CR) made newlines. A file that is missing, empty, binary, or
    not text in its encoding is CorpusError, with a line saying what is wrong that names the file
    by its path as given (/dev/null, not "null")."""
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"corpus file not found: {p}; check the path")
    if p.is_dir():
        raise CorpusError(f"{p} is a folder, not a text file; choose a .txt file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {p}: {read_failure(p, e)}") from None

    def binary(where: str) -> CorpusError:  # where: a text with one stray NUL is not binary
        return CorpusError(f"{p} looks binary (a NUL {where}), not text; choose a UTF-8 text file")

    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    # A NUL anywhere, not only near the start: it would become a character to learn. In UTF-8 a
    # 0 byte is U+0000 and nothing else; in UTF-16, every ASCII character has one.
    nul = -1 if utf16 else raw.find(b"\x00")
    if nul >= 0 and _utf16_without_mark(raw):
        raise CorpusError(
            f"{p} looks like UTF-16 text without a byte-order mark; save it as UTF-8 (or as UTF-16 "
            "with a byte-order mark) and try again"
        )
    if nul >= 0:
        raise binary(f"byte at offset {nul}")
    try:
        text = raw.decode("utf-16" if utf16 else "utf-8")  # utf-16 takes the byte order from the mark
    except UnicodeDecodeError as e:
        what = "starts with a UTF-16 byte-order mark but is not UTF-16 text" if utf16 else "is not UTF-8 text"
        raise CorpusError(
            f"{p} {what} (bad byte at offset {e.start}); save it as UTF-8 and try again"
        ) from None
    del raw  # the text alone from here: a large file is then held at most twice
    nul = text.find("\x00") if utf16 else -1
    if nul >= 0:  # UTF-32, whose byte-order mark starts as UTF-16's, say
        raise binary(f"at character {nul}")
    # a byte-order mark (UTF-8's: the utf-16 codec drops its own) is an encoding detail, not a
    # character to learn
    text = text.removeprefix("\ufeff")
    if not text:
        raise CorpusError(f"{p} is empty; choose a text file with some writing in it")
    # a lone CR too, or a terminal that prints a sample goes back to the start of the line and
    # writes over it. In two steps, the first copy let go before the second (and replace makes
    # no copy where it finds nothing)
    text = text.replace("\r\n", "\n")
    return text.replace("\r", "\n")


def _utf16_without_mark(raw: bytes) -> bool:
    """Whether ``raw``'s NUL bytes are those of UTF-16 text that lacks its byte-order mark: over
    its first UTF16_SNIFF bytes, at every other byte (a Latin character's high byte: at even
    offsets big-endian, odd ones little-endian) and seldom between (U+0100, say), and read in
    that byte order those bytes are text, not control codes. A binary file has NULs at both."""
    head = raw[:UTF16_SNIFF]
    even, odd = head[0::2].count(0), head[1::2].count(0)
    heavy, light = max(even, odd), min(even, odd)
    if len(raw) % 2 or 16 * heavy < len(head) // 2 or 4 * light > heavy:
        return False
    text = head.decode("utf-16-be" if even > odd else "utf-16-le", "replace")
    return all(c.isprintable() or c in "\t\n\r" for c in text)
