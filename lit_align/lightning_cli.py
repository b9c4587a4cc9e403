"""``lit-align fit`` and ``lit-align validate``: LightningCLI with lit_align's module and data.

:func:`run_lightning_cli` is what the ``lit-align`` dispatcher (:mod:`lit_align.cli`), the export
of a run (:mod:`lit_align.export`) and the study (:mod:`lit_align.study.run`) call to parse a
config and build (or run) a trainer, a module and a data module.
"""

from __future__ import annotations

import os
import sys

import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_align import console
from lit_align.callbacks.progress import ConsoleProgress
from lit_align.callbacks.throughput import ThroughputLogger
from lit_align.checkpointing import CheckpointArguments
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.module import AlignmentModule
from lit_align.runs import RunDirectory, claim, resumed_version

SUBCOMMANDS = ("fit", "validate")
"""The LightningCLI subcommands offered (the module has no test or predict step)."""


class AlignCLI(CheckpointArguments, LightningCLI):
    """LightningCLI with lit_align's module and data module, run directories and console.

    The model owns its optimizer and schedule (``--model.optimizer``, ``--model.schedule``), so
    Lightning's ``--optimizer``/``--lr_scheduler`` are not offered; ``test`` and ``predict`` are
    not offered either (the module has no test or predict step).
    """

    run_dir: RunDirectory | None = None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        offered = LightningCLI.subcommands().items()
        return {name: skip for name, skip in offered if name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if self.subclass_mode_model:
            parser.set_defaults({"model": {"class_path": "lit_align.module.AlignmentModule"}})
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="replace the run directory if it already holds a run (its contents are deleted)",
        )

    def instantiate_classes(self) -> None:
        """Build the model, data and trainer, then connect the data to the model's loss and
        tokenizer (:meth:`~lit_align.module.AlignmentModule.connect_data`)."""
        super().instantiate_classes()
        if isinstance(self.datamodule, PreferenceDataModule):
            self.model.connect_data(self.datamodule)

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
