"""The ``lit-align`` command: LightningCLI subcommands plus ``eval``.

``lit-align fit --config configs/quickstart.yaml`` trains; ``--model.loss SPO`` swaps the loss;
``--print_config`` prints the resolved config. ``lit-align eval --help`` compares two policies;
``lit-align study --help`` runs the loss comparison study; ``lit-align score --help`` scores a
preference dataset with a reward model; ``lit-align export --help`` turns a
checkpoint into a Hugging Face model directory.
"""

from __future__ import annotations

import os
import sys
import warnings

import yaml
from lightning.pytorch.cli import LightningCLI

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.module import AlignmentModule

# The module moves PreferenceBatch itself (a frozen dataclass); Lightning warns about that override
# whenever a datamodule is also given, on every run.
warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device`")


class AlignCLI(LightningCLI):
    """LightningCLI with lit_align's module and data module."""

    def add_arguments_to_parser(self, parser) -> None:
        if self.subclass_mode_model:
            parser.set_defaults({"model": {"class_path": "lit_align.module.AlignmentModule"}})


def run_lightning_cli(args: list[str] | dict | None = None, run: bool = True) -> AlignCLI:
    """Run a LightningCLI subcommand (``fit``, ``validate``, …); ``args`` defaults to argv.

    With ``run=False`` the config is parsed and instantiated without a subcommand. A
    ``model.class_path`` (in a ``--config`` file or on the command line) selects a subclass of
    ``AlignmentModule``, such as the reward model ``lit_align.reward.RewardModule``; only then is
    the model parsed in jsonargparse's subclass mode, where ``--model.<dataclass>.<field>=null``
    gives the string ``'None'`` (jsonargparse 4.53): write ``--model.policy='{field: null}'``.
    """
    return AlignCLI(
        AlignmentModule,
        PreferenceDataModule,
        subclass_mode_model=names_model_class(sys.argv[1:] if args is None else args),
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def names_model_class(args: list[str] | dict) -> bool:
    """Whether ``args``, or a ``--config`` file they name, set ``model.class_path``."""
    if isinstance(args, dict):
        return _has_class_path(args)
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in ("--model", "--model.class_path"):
            return True
        path = value or (args[i + 1] if i + 1 < len(args) else "")
        if name == "--config" and os.path.isfile(path):
            with open(path) as f:
                if _has_class_path(yaml.safe_load(f) or {}):
                    return True
    return False


def _has_class_path(config: dict) -> bool:
    model = config.get("model")
    return isinstance(model, str) or (isinstance(model, dict) and "class_path" in model)


def main() -> None:
    """Entry point. Never mutates ``sys.argv``: Lightning re-executes it to start other ranks."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command == "eval":
        from lit_align.eval.cli import main as eval_main

        eval_main(sys.argv[2:])
    elif command == "export":
        from lit_align.export import main as export_main

        export_main(sys.argv[2:])
    elif command == "score":
        from lit_align.reward.score import main as score_main

        score_main(sys.argv[2:])
    elif command == "study":
        from lit_align.study.run import main as study_main

        study_main(sys.argv[2:])
    else:
        run_lightning_cli()


if __name__ == "__main__":
    main()
