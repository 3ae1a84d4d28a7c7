"""User-facing errors and atomic file writes, shared by every stage.

A ``UserError`` is a mistake the user can fix (bad file, unsupported model,
value out of range). The CLI prints its message on one line and exits with
status 2, without a traceback. Anything else is a bug and keeps its traceback.

Outputs are written through ``atomic_path`` (one file) or
``snn_compile.benchmarks.report.atomic_dir`` (one folder): the content goes to a
fresh temporary name next to the target, is checked there, and only then renamed
over the target. Two processes writing one path never see or delete each other's
half-written file: the last complete rename wins, and each cleans up only its own
temporary. New files get the mode the user's umask gives (0666 & ~umask), like any
file created with ``open``.
"""

from __future__ import annotations

import contextlib
import errno
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


def umask() -> int:
    """The process's current umask (read without changing it for longer than a call)."""
    m = os.umask(0o022)
    os.umask(m)
    return m


def file_mode() -> int:
    """Mode of a new file under the current umask, as ``open(path, "w")`` would give."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """Mode of a new folder under the current umask, as ``os.mkdir`` would give."""
    return 0o777 & ~umask()


def check_folder_writable(d: str, path: str, what: str) -> None:
    """``d`` (the folder that will hold ``path``) exists, is a folder and can be written."""
    if not os.path.exists(d):
        raise UserError(f"{what} {path}: folder {d} does not exist; create it "
                        f"(mkdir -p {d}) or choose another path")
    if not os.path.isdir(d):
        raise UserError(f"{what} {path}: {d} is a file, not a folder; choose another path")
    if not os.access(d, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: folder {d} is not writable (read-only or no "
                        "permission); choose a folder you can write to")


def check_output_file(path, what: str = "output") -> str:
    """Refuse, before any work starts, an output path that cannot become a file.

    A folder where a file is meant, a missing, non-folder or read-only parent folder:
    one ``UserError`` naming the path and the fix. Returns ``path``.
    """
    path = os.fspath(path)
    if not path:
        raise UserError(f"{what} path is empty; give a file name")
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a folder; give the path of a file (e.g. "
                        f"{os.path.join(path, 'NAME')})")
    check_folder_writable(os.path.dirname(os.path.abspath(path)), path, what)
    return path


# write failures that are the environment's doing (disk full, permissions, read-only
# file system, I/O error), not a bug: reported as a UserError, nothing left behind
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                       errno.EIO, errno.EFBIG, errno.EISDIR}


def _environment_error(e: BaseException, path: str) -> UserError | None:
    if isinstance(e, OSError) and e.errno in _ENVIRONMENT_ERRNOS:
        return UserError(f"cannot write {path}: {e.strerror or e}; nothing was written "
                         "(free space, fix the folder's permissions or choose another path)")
    return None


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", what: str = "output") -> Iterator[str]:
    """Yield a fresh temporary path next to ``path``; rename it over ``path`` on success.

    Write the output into the temporary path *and check it there* (read it back,
    compare): only a complete, checked file is renamed into place. On any exception
    the temporary file is removed and ``path`` is left as it was — whatever another
    process may have put there meanwhile included. The file gets ``file_mode()``.
    """
    path = check_output_file(path, what)
    d = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".",
                                   suffix=suffix + ".tmp")
    except OSError as e:
        raise (_environment_error(e, path) or e) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())      # after writing: some writers create 0600 files
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        err = _environment_error(e, path)
        if err is not None:
            raise err from None
        raise
