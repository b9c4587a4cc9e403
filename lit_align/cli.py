"""The ``lit-align`` command: LightningCLI subcommands plus ``eval``.

``lit-align fit --config configs/quickstart.yaml`` trains; ``--model.loss SPO`` swaps the loss;
``--print_config`` prints the resolved config. ``lit-align eval --help`` compares two policies;
``lit-align study --help`` runs the loss comparison study; ``lit-align score --help`` scores a
preference dataset with a reward model; ``lit-align export --help`` turns a
checkpoint into a Hugging Face model directory.
"""

from __future__ import annotations

import sys
import warnings

from lightning.pytorch.cli import LightningCLI

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.module import AlignmentModule

# The module moves PreferenceBatch itself (a frozen dataclass); Lightning warns about that override
# whenever a datamodule is also given, on every run.
warnings.filterwarnings("ignore", message="You have overridden `transfer_batch_to_device`")


class AlignCLI(LightningCLI):
    """LightningCLI with lit_align's module and data module.

    ``model.class_path`` may name a subclass of ``AlignmentModule`` (the reward model:
    ``lit_align.reward.RewardModule``); without it the model is ``AlignmentModule``.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({"model": {"class_path": "lit_align.module.AlignmentModule"}})


def run_lightning_cli(args: list[str] | None = None, run: bool = True) -> AlignCLI:
    """Run a LightningCLI subcommand (``fit``, ``validate``, …); ``args`` defaults to argv.

    With ``run=False`` the config is parsed and instantiated without a subcommand.
    """
    return AlignCLI(
        AlignmentModule,
        PreferenceDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


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
