"""Corpora, tokenizers and batching: text in, int64 token windows out (numpy only)."""

from snn_compile.data.batching import (check_corpus_length, random_batch, sequential_blocks,
                                       train_val_split)
from snn_compile.data.corpus import DEFAULT_CORPUS_NAME, default_corpus, load_corpus
from snn_compile.data.text import OOV_POLICIES, check_oov, encode_text, validation_ids
from snn_compile.data.tokenizers import (TOKENIZER_KINDS, UNK, CharTokenizer, Tokenizer,
                                         WordTokenizer, make_tokenizer, tokenizer_from_dict)

__all__ = [
    "DEFAULT_CORPUS_NAME", "OOV_POLICIES", "TOKENIZER_KINDS", "UNK", "CharTokenizer",
    "Tokenizer", "WordTokenizer", "check_corpus_length", "check_oov", "default_corpus",
    "encode_text", "load_corpus", "make_tokenizer", "random_batch", "sequential_blocks",
    "tokenizer_from_dict", "train_val_split", "validation_ids",
]
