import codecs
import hashlib
from pathlib import Path

import numpy as np
import pytest

from engine import data
from engine.data import MAX_VOCAB, CharTokenizer, Corpus, CorpusError, UnknownCharactersError


def test_tokenizer_round_trips_and_sorts_its_vocabulary():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.decode(tok.encode("low hole")) == "low hole"


def test_vectorised_tokenizer_matches_one_character_at_a_time(monkeypatch):
    monkeypatch.setattr(data, "ENCODE_CHUNK", 7)  # many chunks, and a short last one
    rng = np.random.default_rng(0)
    alphabet = [*"abc xyz\n\t.é", "\u4e2d", "\U0001f600", "\U0010fffd"]  # up to the last plane
    text = "".join(rng.choice(alphabet, size=500))
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    expected = [tok.stoi[c] for c in text]  # the plain reference
    np.testing.assert_array_equal(tok.encode(text), expected)
    assert tok.decode(tok.encode(text)) == text
    with pytest.raises(UnknownCharactersError, match=r"'q'"):
        tok.encode("abc " * 10 + "q")  # past the first chunk
    with pytest.raises(UnknownCharactersError, match="U0010ffff"):
        tok.encode("a\U0010ffff")  # beyond the highest code point of the vocabulary


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UnknownCharactersError, match=r"'x'.*'z'"):
        tok.encode("axbz")


def test_unknown_characters_beyond_ascii_are_shown_with_their_code_points():
    """An é of one code point and an e with a combining accent look the same on screen."""
    tok = CharTokenizer.from_text("cafe\u0301 x")
    with pytest.raises(UnknownCharactersError) as info:
        tok.encode("café!")
    assert "vocabulary: '!' 'é' (U+00E9); use only" in str(info.value)


def test_split_is_ninety_ten_and_batches_are_next_character_pairs():
    corpus = Corpus("abcdefghij" * 100)
    assert len(corpus.train) == 900 and len(corpus.val) == 100
    x, y = corpus.batch(np.random.default_rng(0), "train", 4, 8)
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"\x00\x01\x02binary\x00", "binary"),
        ("caf\u00e9".encode("latin-1"), "not UTF-8"),
    ],
)
def test_bad_files_give_one_clear_line(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message) as info:
        Corpus.from_file(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"To be, or not to be\n" * 4000 + b"\x00",  # past the first 64 KiB, which alone was looked at
        codecs.BOM_UTF16_LE + ("To be, or not to be\n" * 4000 + "\x00").encode("utf-16-le"),
    ],
    ids=["utf-8", "utf-16"],
)
def test_a_nul_anywhere_is_binary_not_a_character_to_learn(tmp_path, content):
    path = tmp_path / "late.bin"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match="looks binary") as info:
        data.read_text(path)
    assert "80000" in str(info.value)  # where: a long text with one stray NUL is not binary


def test_every_refusal_of_a_file_names_it_by_its_path_as_given(tmp_path, monkeypatch):
    """Not by its name alone ("null is empty", of /dev/null, named no file), nor resolved."""
    monkeypatch.chdir(tmp_path)
    path = Path("texts") / "null"
    path.parent.mkdir()
    many = "".join(chr(c) for c in range(0x100, 0x100 + MAX_VOCAB + 4096) if not 0xD800 <= c < 0xE000)
    for content in (b"", b"\x00binary", b"caf\xe9", many.encode(), b"zzz"):
        path.write_bytes(content)
        with pytest.raises(CorpusError) as info:
            Corpus.from_file(path)
        assert str(info.value).startswith(f"{path} ")
    path.write_text("short text", encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        Corpus.from_file(path).check_context(32)
    assert str(info.value).startswith(f"{path} ")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_text_with_its_byte_order_mark_is_read_as_text(tmp_path, encoding):
    # what Windows Notepad saves as "Unicode": it was refused as binary, for its NUL bytes
    bom = codecs.BOM_UTF16_LE if encoding == "utf-16-le" else codecs.BOM_UTF16_BE
    path = tmp_path / "notepad.txt"
    path.write_bytes(bom + "To be,\r\nor not — to be.\r\n".encode(encoding))
    assert data.read_text(path) == "To be,\nor not — to be.\n"  # no mark, no CR, as for UTF-8
    assert Corpus.from_file(path).text == "To be,\nor not — to be.\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (codecs.BOM_UTF16_LE + "To be".encode("utf-16-le") + b"\x00\xdc!\x00", "offset 12"),  # lone half
        (codecs.BOM_UTF16_BE + "To be".encode("utf-16-be") + b"!", "offset 12"),  # an odd byte
    ],
)
def test_a_file_with_a_utf16_mark_that_is_not_utf16_is_refused(tmp_path, content, message):
    path = tmp_path / "odd.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError) as info:
        data.read_text(path)
    assert str(info.value) == (
        f"{path} starts with a UTF-16 byte-order mark but is not UTF-16 text (bad byte at "
        f"{message}); save it as UTF-8 and try again"
    )


def test_every_line_end_is_a_newline(tmp_path):
    """A lone CR (classic Mac OS) was kept: a sample printed in a terminal wrote over its lines."""
    path = tmp_path / "mac.txt"
    path.write_bytes(b"To be,\ror not\r\nto be.\r\r\n")
    assert data.read_text(path) == "To be,\nor not\nto be.\n\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("To be".encode("utf-32"), "looks binary"),  # its mark starts as UTF-16's: NULs, read so
        (codecs.BOM_UTF16_LE, "is empty"),
        (codecs.BOM_UTF8, "is empty"),
    ],
)
def test_a_byte_order_mark_alone_or_of_utf32_is_not_text(tmp_path, content, message):
    path = tmp_path / "marked.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        data.read_text(path)


def test_text_shorter_than_the_context_is_refused():
    corpus = Corpus("short text")
    with pytest.raises(CorpusError, match="fewer than the context"):
        corpus.check_context(32)


@pytest.mark.parametrize(
    ("text", "shown"),
    [("a" * 1000, "'a'"), ("\n\n\n", r"'\n'"), ("é" * 50, "'é' (U+00E9)")],
    ids=["letter", "newline", "accented"],
)
def test_a_text_of_one_character_is_refused_as_nothing_to_learn(text, shown):
    """Its loss is 0 from the first iteration: also read in a larger vocabulary (a checkpoint's)."""
    for tokenizer in (None, CharTokenizer.from_text("abé\n")):
        with pytest.raises(CorpusError, match="only one distinct character") as info:
            Corpus(text, "same.txt", tokenizer)
        assert str(info.value).startswith(f"same.txt holds only one distinct character, {shown}, ")


def test_a_folder_is_not_a_corpus(tmp_path):
    with pytest.raises(CorpusError, match="folder"):
        Corpus.from_file(tmp_path)


def test_vocabulary_too_large_for_the_token_type():
    chars = [chr(c) for c in range(0x100, 0x100 + MAX_VOCAB + 4096) if not 0xD800 <= c < 0xE000]
    with pytest.raises(CorpusError, match="distinct characters"):
        Corpus("".join(chars))


def test_the_text_is_kept_only_as_tokens_and_comes_back_whole(monkeypatch):
    monkeypatch.setattr(data, "ENCODE_CHUNK", 7)  # decoded chunk by chunk too
    text = "héllo wörld ✓ 𝄞\n" * 50
    corpus = Corpus(text, "t")
    assert "text" not in vars(corpus)  # not a second copy of a large corpus
    assert corpus.text == text
    assert corpus.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()  # hashed chunk by chunk


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_text_without_its_byte_order_mark_is_called_that_not_binary(tmp_path, encoding):
    """Its NULs, every other byte, made it "binary (a NUL byte at offset 0)", which gave no clue
    how to save it so that it reads."""
    path = tmp_path / "u16nobom.txt"
    path.write_bytes(
        ("To be, or not — to be: Ā Ѐ\n" * 400).encode(encoding)
    )  # U+0100: a NUL byte on the other side
    with pytest.raises(CorpusError) as info:
        data.read_text(path)
    assert str(info.value) == (
        f"{path} looks like UTF-16 text without a byte-order mark; save it as UTF-8 (or as UTF-16 "
        "with a byte-order mark) and try again"
    )


@pytest.mark.parametrize(
    "content",
    [
        np.arange(2000, dtype="<u2").tobytes(),  # small numbers: NULs at odd offsets, then none
        np.arange(2000, dtype="<u4").tobytes(),  # NULs at both
        b"To be, or not to be\n" * 40 + b"\x00" + b"!",  # a stray NUL in UTF-8 text
        bytes(4096),
    ],
    ids=["uint16", "uint32", "stray", "zeros"],
)
def test_binary_with_nul_bytes_is_still_called_binary(tmp_path, content):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=r"looks binary \(a NUL byte at offset \d+\), not text"):
        data.read_text(path)
