"""Corpora, tokenizers, split and batching: behaviour, determinism and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snn_compile.data import (UNK, CharTokenizer, WordTokenizer, check_corpus_length,
                              load_corpus, make_tokenizer, random_batch, sequential_blocks,
                              tokenizer_from_dict, train_val_split)
from snn_compile.errors import UserError


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_corpus()


@pytest.fixture(scope="module")
def word_tok(corpus) -> WordTokenizer:
    return make_tokenizer("word", corpus)


# --- corpus -------------------------------------------------------------------------------

def test_default_corpus_is_large_english_and_deterministic(corpus):
    assert len(corpus) > 400_000
    assert load_corpus() == corpus
    assert load_corpus(None) == corpus
    for phrase in ("The \"for\" statement", "exception", "the "):
        assert phrase in corpus


def test_load_text_file_normalises_bom_and_line_endings(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffHéllo\r\nwörld\rend\n".encode("utf-8"))
    assert load_corpus(p) == "Héllo\nwörld\nend\n"
    assert load_corpus(str(p)) == "Héllo\nwörld\nend\n"


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(UserError, match=r"nope\.txt does not exist"):
        load_corpus(missing)


def test_directory(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        load_corpus(tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        load_corpus(p)


def test_whitespace_only_file(tmp_path):
    p = tmp_path / "blank.txt"
    p.write_text(" \n\t\n  ")
    with pytest.raises(UserError, match="only whitespace"):
        load_corpus(p)


def test_non_utf8_names_the_byte_offset(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("abc caf".encode() + "é".encode("latin-1") + b" more")
    with pytest.raises(UserError, match=r"0xe9 at byte offset 7") as e:
        load_corpus(p)
    assert "UTF-8" in str(e.value) and "\n" not in str(e.value)


# --- char tokenizer -----------------------------------------------------------------------

def test_char_vocab_is_sorted_characters_plus_unknown():
    tok = make_tokenizer("char", "banana!")
    assert isinstance(tok, CharTokenizer) and tok.kind == "char"
    assert tok.chars == ["!", "a", "b", "n"]
    assert tok.vocab_size == 5
    assert tok.encode("ban!") == [3, 2, 4, 1]
    assert tok.decode([3, 2, 4, 1]) == "ban!"


def test_char_round_trip_on_default_corpus(corpus):
    tok = make_tokenizer("char", corpus)
    ids = tok.encode(corpus)
    assert min(ids) >= 1 and max(ids) == tok.vocab_size - 1
    assert tok.decode(ids) == corpus


def test_char_strict_names_the_character_and_position():
    tok = make_tokenizer("char", "hello world")
    with pytest.raises(UserError, match=r"'Z' \(U\+005A\) at position 6.*strict=False"):
        tok.encode("hello Zorld")


def test_char_non_strict_maps_to_unknown_which_decodes_to_replacement_char():
    tok = make_tokenizer("char", "hello world")
    ids = tok.encode("hello Zorld", strict=False)
    assert ids[6] == tok.unk_id == 0
    assert tok.decode(ids) == "hello \ufffdorld"


def test_char_too_many_distinct_characters():
    text = "".join(chr(0x4E00 + i) for i in range(50))
    with pytest.raises(UserError, match="50 distinct characters"):
        make_tokenizer("char", text, max_vocab=20)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(max_size=40))
def test_char_non_strict_round_trip_property(train, other):
    tok = CharTokenizer.train(train)
    expected = "".join(c if c in tok.chars else "\ufffd" for c in other)
    assert tok.decode(tok.encode(other, strict=False)) == expected


# --- word tokenizer -----------------------------------------------------------------------

def test_word_split_lowercases_and_separates_punctuation():
    assert WordTokenizer.split("Hello, World! (It's 3.10.)\nNext-line") == [
        "hello", ",", "world", "!", "(", "it's", "3.10", ".", ")", "\n", "next", "-", "line"]


def test_word_decode_reattaches_punctuation():
    tok = make_tokenizer("word", "Hello, world! (It's 3.10.) Say \"hi\" and 'bye'.\nwell-known")
    text = "Hello, world! (It's 3.10.) Say \"hi\" and 'bye'.\nwell-known"
    assert tok.decode(tok.encode(text)) == text.lower()


def test_word_vocab_is_bounded_with_deterministic_ties():
    text = "c b a a b c d"            # a, b, c tie at 2; d once
    tok = make_tokenizer("word", text, max_vocab=3)
    assert tok.vocab == [UNK, "a", "b"]
    assert make_tokenizer("word", "a b c c b a d", max_vocab=3).vocab == tok.vocab
    assert tok.encode("a b c d e") == [1, 2, 0, 0, 0]
    assert tok.decode([1, 0, 2]) == "a <unk> b"
    assert tok.encode("a <unk> b") == [1, 0, 2]


def test_word_tokenizer_on_default_corpus(corpus, word_tok):
    assert word_tok.vocab_size <= 4096
    small = make_tokenizer("word", corpus, max_vocab=500)
    assert small.vocab_size == 500
    ids = small.encode(corpus)
    assert 0 < ids.count(0) < len(ids) // 5    # rare words become <unk>, most text is covered
    assert small.encode(small.decode(ids)) == ids


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_word_encode_decode_is_a_fixed_point(word_tok, data):
    ids = data.draw(st.lists(st.integers(0, word_tok.vocab_size - 1), max_size=60))
    assert word_tok.encode(word_tok.decode(ids)) == ids


def test_decode_out_of_range_id():
    tok = make_tokenizer("char", "abc")
    with pytest.raises(UserError, match="token id 7 is outside"):
        tok.decode([1, 7])
    with pytest.raises(UserError, match="token id -1 is outside"):
        make_tokenizer("word", "a b").decode([-1])


# --- tokenizer factory and serialisation --------------------------------------------------

@pytest.mark.parametrize("kind", ["char", "word"])
def test_to_dict_round_trip_is_exact(corpus, kind):
    tok = make_tokenizer(kind, corpus[:20_000])
    d = tok.to_dict()
    again = tokenizer_from_dict(json.loads(json.dumps(d)))   # survives JSON (and pickling)
    assert type(again) is type(tok) and again == tok and again.kind == kind
    assert again.to_dict() == d
    sample = corpus[20_000:21_000]
    assert again.encode(sample, strict=False) == tok.encode(sample, strict=False)


def test_unknown_tokenizer_kind():
    with pytest.raises(UserError, match="unknown tokenizer 'bpe'.*char, word"):
        make_tokenizer("bpe", "text")


@pytest.mark.parametrize("d", [
    None, {}, {"kind": "bpe"}, {"kind": "char"}, {"kind": "char", "chars": ["ab"]},
    {"kind": "char", "chars": ["a", "a"]}, {"kind": "word", "vocab": ["a", "b"]},
    {"kind": "char", "chars": ["a"], "version": 99},
])
def test_corrupt_tokenizer_dict(d):
    with pytest.raises(UserError):
        tokenizer_from_dict(d)


# --- split and batching -------------------------------------------------------------------

def test_split_is_contiguous_and_deterministic():
    ids = np.arange(1000)
    tr, va = train_val_split(ids, 0.1)
    assert tr.dtype == va.dtype == np.int64
    assert len(va) == 100 and np.array_equal(np.concatenate([tr, va]), ids)
    tr2, va2 = train_val_split(list(range(1000)), 0.1)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.5, 2.0])
def test_split_rejects_bad_fraction(frac):
    with pytest.raises(UserError, match="between 0 and 1"):
        train_val_split(np.arange(100), frac)


def test_random_batch_targets_are_next_tokens_and_seeded():
    ids = np.arange(500) * 3
    x, y = random_batch(ids, 8, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == np.int64
    assert np.array_equal(y[:, :-1], x[:, 1:])
    assert np.array_equal(y[:, -1], x[:, -1] + 3)           # the token after the window
    x2, y2 = random_batch(ids, 8, 16, np.random.default_rng(0))
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = random_batch(ids, 8, 16, np.random.default_rng(1))
    assert not np.array_equal(x, x3)
    # every window start is reachable, including the last one (len - context - 1)
    xs, _ = random_batch(np.arange(18), 2000, 16, np.random.default_rng(0))
    assert set(xs[:, 0]) == {0, 1}


@pytest.mark.parametrize("n,context,batch", [(101, 10, 3), (100, 10, 4), (12, 11, 2), (57, 5, 1)])
def test_sequential_blocks_score_every_token_once(n, context, batch):
    ids = np.arange(n) + 7
    blocks = list(sequential_blocks(ids, context, batch))
    ys = np.concatenate([y.reshape(-1) for _, y in blocks])
    assert np.array_equal(ys, ids[1:])
    for x, y in blocks:
        assert x.shape == y.shape and x.dtype == np.int64 and x.shape[0] <= batch
        assert np.array_equal(y, x + 1)
    *full, last = blocks
    assert all(x.shape[1] == context for x, _ in full)
    if (n - 1) % context:
        assert last[0].shape == (1, (n - 1) % context)
    assert list(map(lambda b: b[0].tolist(), sequential_blocks(ids, context, batch))) == \
        [x.tolist() for x, _ in blocks]


def test_corpus_shorter_than_one_context_window():
    check_corpus_length(np.arange(33), 32)
    with pytest.raises(UserError, match=r"32 tokens but one context window needs 33.*at most 31"):
        check_corpus_length(np.arange(32), 32)
    with pytest.raises(UserError, match="needs 65"):
        random_batch(np.arange(10), 2, 64, np.random.default_rng(0))
    with pytest.raises(UserError, match="needs 65"):
        next(sequential_blocks(np.arange(10), 64, 2))


def test_short_user_corpus_end_to_end(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("tiny text")
    tok = make_tokenizer("char", load_corpus(p))
    ids = np.array(tok.encode(load_corpus(p)))
    with pytest.raises(UserError, match="9 tokens"):
        check_corpus_length(ids, 64)
