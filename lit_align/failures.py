"""One line per failure the user can fix, instead of a traceback.

Errors that name what to change (a flag, a file, a row) are raised as the exception types below;
``lit-align`` prints them as ``lit-align: error: <message>`` and exits 1. Anything else is a bug
and keeps its traceback, as does every error with ``--debug`` or ``LIT_ALIGN_DEBUG=1``.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lit_align.callbacks.instability import InstabilityError

USER_ERRORS = (
    ValueError,  # DataError, NonFiniteWeightsError, ResumeChangedError, invalid flags
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    pickle.UnpicklingError,  # UnsafeCheckpointError, torch.load's weights-only refusals
    InstabilityError,
)
DEBUG_VARIABLE = "LIT_ALIGN_DEBUG"


def one_line(error: BaseException) -> str:
    """``lit-align: error: <message>`` on one line (the message's lines joined)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return f"lit-align: error: {message}"


@contextmanager
def reported_errors(debug: bool = False) -> Iterator[None]:
    """Print :data:`USER_ERRORS` as :func:`one_line` and exit 1; other exceptions propagate.

    Args:
        debug: re-raise instead (``--debug``); ``LIT_ALIGN_DEBUG=1`` does the same.
    """
    try:
        yield
    except USER_ERRORS as error:
        if debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(one_line(error), file=sys.stderr)
        print(f"(--debug or {DEBUG_VARIABLE}=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
