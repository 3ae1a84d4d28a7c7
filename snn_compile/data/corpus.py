"""Text corpora: the embedded default and any UTF-8 file.

The default corpus is CPython's own ``pydoc_data.topics`` (the text that
``help('for')`` prints: ~460 kB of English prose about Python, with code
examples). It ships with every Python, so training and the demo need no
download and no data file of ours.
"""

from __future__ import annotations

import os

from snn_compile.errors import UserError

DEFAULT_CORPUS_NAME = "pydoc_data.topics"


def default_corpus() -> str:
    """The topics' texts joined in sorted key order (deterministic on one Python)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip("\n") for key in sorted(topics)) + "\n"


def load_corpus(path: str | os.PathLike | None = None) -> str:
    """Return the text of ``path``, or the embedded default corpus when ``path`` is None.

    The file is decoded as strict UTF-8 (a leading byte-order mark is dropped)
    and line endings are normalised to ``\\n``, so the same text gives the same
    tokens on every platform. Raises ``UserError`` for a missing path, a
    directory, an empty or whitespace-only file, and bytes that are not UTF-8.
    """
    if path is None:
        return default_corpus()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"corpus file {path} does not exist; give the path of a UTF-8 text "
                        "file, or leave out --data to use the embedded default corpus")
    if os.path.isdir(path):
        raise UserError(f"corpus path {path} is a directory; give the path of a UTF-8 text file")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw:
        raise UserError(f"corpus file {path} is empty; give a text file with some prose in it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"corpus file {path} is not UTF-8 text: byte 0x{raw[e.start]:02x} at "
                        f"byte offset {e.start} cannot be decoded ({e.reason}); convert the "
                        "file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise UserError(f"corpus file {path} contains only whitespace; give a text file with "
                        "some prose in it")
    return text
