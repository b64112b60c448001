"""Errors a user can fix, and the one boundary every console script answers them through.

Bad input ends a command with one line, `vip5-<tool>: error: <what and where>`, on stderr and exit status 1; usage
errors are argparse's (exit 2); a traceback only with `--debug` or `VIP5_DEBUG=1`. Anything the failed command had
started writing is removed (`removed_on_failure`), so no half-written output is ever left to look complete.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "VIP5_DEBUG"


class DataFormatError(ValueError):
    """An input file is malformed or disagrees with another input file."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        location = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{location}: {message}")


# What bad input raises: our ValueErrors (DataFormatError, ConversionError, settings), missing or unreadable files
# (OSError, which also covers the Hub's answers: no such repo, offline mode, unreachable), unknown keys, and invalid
# values in a config.json (StrictDataclassError). Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, KeyError, StrictDataclassError)


def one_line(error: BaseException) -> str:
    """The message of `error` on one line: a multi-line message's later lines are joined with "; "."""
    text = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else str(error)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return " ".join([lines[0], "; ".join(lines[1:])]).strip()


def debug_requested(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


def add_debug_argument(parser) -> None:
    """List `--debug` in a parser's help (the boundary removes it from argv before the parser sees it)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the full traceback of an error (also: {DEBUG_ENV}=1)")


def cli_boundary(prog: str) -> Callable[[Callable[[list[str]], int | None]], Callable[[list[str] | None], int]]:
    """Decorate a console script's `main(argv)`: it returns the exit status instead of raising for bad input.

        @cli_boundary("vip5-train")
        def main(argv: list[str]) -> int | None: ...     # argv never None inside; `--debug` already removed

    The decorated `main(argv=None)` reads `sys.argv[1:]` when argv is None and returns 0 (or what the function
    returned), 1 after printing a user error, 130 after Ctrl-C; argparse's own exits (2, or 0 for --help) pass through.
    """

    def decorate(run: Callable[[list[str]], int | None]) -> Callable[[list[str] | None], int]:
        @functools.wraps(run)
        def main(argv: list[str] | None = None) -> int:
            argv = list(sys.argv[1:] if argv is None else argv)
            debug = debug_requested(argv)
            argv = [arg for arg in argv if arg != DEBUG_FLAG]
            try:
                status = run(argv)
            except KeyboardInterrupt:
                if debug:
                    raise
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            except Exception as error:
                if debug or not isinstance(error, USER_ERRORS):
                    raise
                print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
                return 1
            return 0 if status is None else int(status)

        return main

    return decorate


@contextmanager
def removed_on_failure(path: str | Path, keep: Callable[[Path], bool] = lambda entry: False) -> Iterator[Path]:
    """Undo what a command wrote to the folder or file `path` if it fails (any exception, Ctrl-C included).

    What existed before is never touched. A folder the command created is removed, except entries `keep` accepts
    (complete resumable checkpoints); entries it created inside an existing folder go the same way.
    """
    path = Path(path)
    existed = path.exists()
    before = set(path.iterdir()) if path.is_dir() else set()
    try:
        yield path
    except BaseException:
        if path.is_dir():
            created = [entry for entry in path.iterdir() if entry not in before and not keep(entry)]
            for entry in created:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
            if not existed and not any(path.iterdir()):
                path.rmdir()
        elif not existed and path.exists():
            path.unlink()
        raise
