"""User-facing errors and atomic file writes, shared by every stage.

A ``UserError`` is a mistake the user can fix (bad file, unsupported model,
value out of range). The CLI prints its message on one line and exits with
status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from typing import Callable, Iterator


class UserError(Exception):
    """A problem with the user's input; the message names the thing and the fix."""


def exits_on_user_error(main: Callable[..., int]) -> Callable[..., int]:
    """For ``python -m`` entry points: a UserError becomes one line on stderr and exit
    status 2, as in the ``snn-compile`` CLI."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return wrapped


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed, so no half-written output is
    ever left at ``path``.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(d):
        raise UserError(f"output folder {d} does not exist; create it or choose another path")
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".",
                               suffix=suffix + ".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
