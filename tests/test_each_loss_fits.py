"""Every loss of the catalogue trains through the CLI: a few steps on the embedded task.

Each run parses the quickstart config with the loss swapped in (``--model.loss=<Name>``) and a
1-layer, hidden-32 model, builds the policy, then fits 3 optimizer steps with
``cli.trainer.fit(cli.model, datamodule=cli.datamodule)`` (what the ``fit`` subcommand runs), so
the weights can be read before and after. No validation, logger, checkpoint or export.
"""

import inspect
import json
from pathlib import Path

import pytest
import torch

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.lightning_cli import run_lightning_cli
from lit_align.losses import ALL_LOSSES, WeightedSum

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart_sft.yaml"
TINY = (
    "--model.policy.config={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
    "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}"
)
RPO = {
    "class_path": "WeightedSum",
    "init_args": {"losses": [{"class_path": "DPO"}, {"class_path": "SFT"}], "weights": [1.0, 0.5]},
}
HAS_UNPAIRED_DATA = "unpair" in inspect.signature(PreferenceDataModule.__init__).parameters
# In-process CLI runs under pytest: LightningCLI warns that pytest's own argv is ignored.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def loss_params():
    for cls in ALL_LOSSES:
        name = cls.__name__
        if cls is WeightedSum:
            yield pytest.param(json.dumps(RPO), [], id="WeightedSum[DPO+SFT]")
        elif cls.supports_paired:
            yield pytest.param(name, [], id=name)
        else:
            skip = pytest.mark.skipif(
                not HAS_UNPAIRED_DATA, reason="needs unpaired data — see tests/data"
            )
            yield pytest.param(name, ["--data.unpair=true"], id=name, marks=skip)


@pytest.mark.parametrize("loss, data_args", loss_params())
def test_loss_fits_a_few_steps(loss, data_args, tmp_path):
    args = [
        f"--config={CONFIG}",
        "--model.policy.pretrained=null",
        TINY,
        f"--model.loss={loss}",
        "--trainer.max_epochs=null",
        "--trainer.max_steps=3",
        "--trainer.limit_val_batches=0",
        "--trainer.callbacks=[]",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.builtin_rows=64",
        "--data.batch_size=4",
        *data_args,
    ]
    cli = run_lightning_cli(args, run=False)
    cli.model.configure_model()  # fit() keeps this policy: configure_model builds only once
    before = {k: v.clone() for k, v in cli.model.policy.state_dict().items()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert cli.trainer.global_step == 3
    assert torch.isfinite(cli.trainer.callback_metrics["loss"])
    after = cli.model.policy.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no policy weight changed in 3 optimizer steps"
