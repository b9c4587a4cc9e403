"""RewardModule through the ``lit-align`` CLI on the embedded task: fit, export, resume, LoRA."""

from pathlib import Path

import pytest
import torch
from tiny import TINY
from transformers import AutoModelForSequenceClassification

from lit_align.data.formats import DataError
from lit_align.lightning_cli import names_model_class, run_lightning_cli
from lit_align.models import PolicyConfig
from lit_align.reward import RewardModule

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "reward_model.yaml"


def _fit(tmp_path: Path, *extra: str, run: bool = True):
    args = [
        f"--config={CONFIG}",
        f"--model.policy.config={TINY}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.version=test",
        "--data.builtin_rows=640",
        "--data.max_length=48",
        *extra,
    ]
    return run_lightning_cli(["fit", *args] if run else args, run=run)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One epoch on 640 pairs (40 steps), validated on 64 held-out pairs, exported."""
    tmp_path = tmp_path_factory.mktemp("reward")
    cli = _fit(tmp_path, "--model.optimizer.init_args.lr=0.003")
    return cli, tmp_path / "reward" / "test"


def test_config_selects_the_reward_module(tmp_path):
    cli = _fit(tmp_path, run=False)
    assert isinstance(cli.model, RewardModule)
    assert cli.model.loss.center_rewards_coefficient == 0.01


def test_fit_learns_and_logs_reward_metrics(fitted):
    cli, run_dir = fitted
    metrics = cli.trainer.callback_metrics
    for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert f"val_{name}" in metrics and name in metrics
    assert metrics["val_rewards/accuracies"] > 0.7  # chance is 0.5; 64 held-out pairs
    assert metrics["val_rewards/margins"] > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_export_round_trips_through_auto_model(fitted):
    """The export is an AutoModelForSequenceClassification directory giving identical scores."""
    cli, run_dir = fitted
    module = cli.model
    batch = next(iter(cli.datamodule.val_dataloader()))
    module.policy.eval()
    loaded = AutoModelForSequenceClassification.from_pretrained(run_dir / "export").eval()
    with torch.no_grad():
        expected = module.policy(batch)  # (2B,)
        got = loaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert loaded.config.num_labels == 1
    torch.testing.assert_close(got[:, 0], expected, rtol=0, atol=0)


def test_resume_continues_from_the_checkpoint(fitted, tmp_path):
    """``--ckpt_path`` restores the weights, optimizer and step of the fitted run."""
    cli, run_dir = fitted
    resumed = _fit(
        tmp_path, f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "--trainer.max_epochs=2"
    )
    assert resumed.trainer.global_step == 2 * cli.trainer.global_step


def test_lora_trains_adapters_and_head_and_exports_merged(tmp_path):
    lora = "{r: 4, alpha: 8.0, target_modules: [q_proj, v_proj]}"
    cli = _fit(tmp_path, f"--model.policy.lora={lora}", "--trainer.max_steps=2")
    trainable = {n for n, p in cli.model.policy.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)
    batch = next(iter(cli.datamodule.val_dataloader()))
    export = tmp_path / "reward" / "test" / "export"
    loaded = AutoModelForSequenceClassification.from_pretrained(export).eval()
    cli.model.policy.eval()
    with torch.no_grad():
        expected = cli.model.policy(batch)
        got = loaded(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(got[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_unpaired_data_is_refused(tmp_path):
    with pytest.raises(DataError, match="needs paired data"):
        _fit(tmp_path, "--data.unpair=true", "--trainer.max_steps=1")


def test_meta_init_is_refused():
    with pytest.raises(ValueError, match=r"--model.policy.meta_init=true is not supported"):
        RewardModule(policy=PolicyConfig(pretrained="x", meta_init=True))


def test_export_command_rebuilds_the_reward_module(fitted, tmp_path):
    """``lit-align export`` reads the run's saved config (which names the class) and checkpoint."""
    from lit_align.export import main as export_main

    cli, run_dir = fitted
    out = tmp_path / "from_ckpt"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    export_main([f"--config={run_dir / 'config.yaml'}", f"--ckpt_path={ckpt}", f"--output={out}"])
    exported = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    trained = cli.model.policy.model.state_dict()
    assert all(torch.equal(exported[name], value) for name, value in trained.items())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([f"--config={CONFIG}"], True),
        (["fit", "--config", str(CONFIG.with_name("quickstart.yaml"))], False),
        (["fit", "--model=lit_align.reward.RewardModule"], True),
        (["fit", "--model.loss=DPO"], False),
        ({"model": {"class_path": "lit_align.reward.RewardModule"}}, True),
    ],
)
def test_model_class_selection_is_found(args, expected):
    assert names_model_class(args) is expected
