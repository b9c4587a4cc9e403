"""What ``lit-align`` prints: rank-zero lines, and Lightning's known noise kept off the console.

Silenced, each by its exact message (other warnings still show): Lightning's litlogger and
litmodels tips, the ``LeafSpec`` deprecation that Lightning's ``_pytree`` triggers inside
torch, "Total length of `list` across ranks is zero" (the datamodule returns an empty list when
there is no validation data) and the ``transfer_batch_to_device`` override notice (the module
moves :class:`~lit_align.types.PreferenceBatch` itself), and LightningCLI's notice that ``args``
and ``sys.argv`` are both given (``lit-align`` passes argv itself, without ``--debug``). When
stderr is not a terminal, the progress bars of ``datasets`` (tokenising) and ``transformers``
(writing the export) are off too.
"""

from __future__ import annotations

import logging
import sys
import warnings

import datasets
import transformers
from lightning.pytorch.utilities import rank_zero_info

TIPS = ("💡 Tip:", "litmodels")
WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Total length of `list` across ranks is zero",
    r"You have overridden `transfer_batch_to_device`",
    r"LightningCLI's args parameter is intended",  # main() passes argv without --debug on purpose
)
LIGHTNING_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(tip in record.getMessage() for tip in TIPS)


def quiet_known_noise() -> None:
    """Silence the known noise (idempotent); in a log file, also the libraries' progress bars."""
    for message in WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    if not sys.stderr.isatty():  # a bar redrawn with \r is one garbled line in a file
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


def info(line: str) -> None:
    """Print ``line`` once (global rank zero), through Lightning's console logger."""
    rank_zero_info(line)
