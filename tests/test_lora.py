"""LoRA: a short DPO fit on the embedded task from a saved tiny model, through the CLI.

The base model (random tiny Llama) is saved locally and trained with ``--model.policy.lora``
for 6 DPO steps. Checked: the loss starts at ln 2; only adapter parameters are trainable and
only they change; the reference is the policy with adapters disabled (no parameters of its
own, no second copy) and scores exactly like the saved base model; the checkpoint holds the
adapters; the merged export loads with ``AutoModelForCausalLM.from_pretrained`` and scores like
the trained policy; the adapter-only export reloads with ``peft``.
"""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback
from peft import PeftModel
from tiny import TINY
from transformers import AutoModelForCausalLM

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.synthetic import make_rows
from lit_align.export import export_hf
from lit_align.lightning_cli import run_lightning_cli
from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer
from lit_align.scorer import CausalLMScorer


class Recorder(Callback):
    """The policy's parameters before training and every micro-batch's loss."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.before = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["record"].loss.item())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    new = PolicyConfig(tokenizer="builtin:sort", config=TINY)
    build_causal_lm(new, load_tokenizer(new)).save_pretrained(tmp / "base")
    args = [
        f"--model.policy.pretrained={tmp / 'base'}",
        "--model.policy.tokenizer=builtin:sort",
        "--model.policy.lora.r=4",
        "--model.policy.lora.alpha=8",
        "--model.loss=DPO",
        "--model.optimizer.lr=0.01",
        "--model.schedule.warmup_ratio=0",
        "--trainer.max_steps=6",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp / 'run'}",
        "--trainer.callbacks+=lit_align.callbacks.HFExport",
        f"--trainer.callbacks.dirpath={tmp / 'export'}",
        "--data.builtin_rows=32",
        "--data.batch_size=4",
        "--data.max_length=64",
    ]
    cli = run_lightning_cli(args, run=False)
    recorder = Recorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.model.policy.eval()
    tokenizer = cli.model.tokenizer
    rows = [tokenize_row(r, tokenizer, Truncation(64)) for r in make_rows(4, seed=5)]
    return tmp, cli.model, recorder, PreferenceCollator(tokenizer.pad_token_id)(rows)


def _logps(scorer, batch) -> torch.Tensor:
    with torch.no_grad():
        return scorer(batch, with_token_logps=True).token_logps


def test_dpo_starts_at_ln2_and_only_adapters_train(run):
    _, module, recorder, _ = run
    assert len(recorder.losses) == 6
    assert recorder.losses[0] == pytest.approx(math.log(2), abs=1e-6)
    trainable = [n for n, p in module.policy.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    after = dict(module.policy.named_parameters())
    changed = [n for n, p in recorder.before.items() if not torch.equal(p, after[n])]
    assert any(".lora_B." in n for n in changed)
    assert sorted(changed) == sorted(trainable)


def test_reference_is_the_base_model_without_a_copy(run):
    tmp, module, _, batch = run
    assert module.reference is not None and list(module.reference.parameters()) == []
    base = AutoModelForCausalLM.from_pretrained(tmp / "base").eval()
    adapters = sum(p.numel() for p in module.policy.parameters() if p.requires_grad)
    base_size = sum(p.numel() for p in base.parameters())
    assert sum(p.numel() for p in module.parameters()) == base_size + adapters  # one copy
    expected = _logps(CausalLMScorer(base), batch)
    diff = (_logps(module.reference, batch) - expected).abs().max().item()
    assert diff <= 1e-6, diff
    assert (_logps(module.policy, batch) - expected).abs().max() > 1e-3  # the adapters learned


def test_checkpoint_holds_adapters_and_exports_load(run):
    tmp, module, _, batch = run
    (ckpt,) = (tmp / "run" / "checkpoints").glob("*.ckpt")
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(".lora_A." in k for k in state) and any(".lora_B." in k for k in state)
    trained = _logps(module.policy, batch)
    merged = AutoModelForCausalLM.from_pretrained(tmp / "export").eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logps(CausalLMScorer(merged), batch), trained, atol=1e-5)
    export_hf(module.policy.model, module.tokenizer, str(tmp / "adapters"), merge_adapters=False)
    assert (tmp / "adapters" / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tmp / "base")
    reloaded = PeftModel.from_pretrained(base, tmp / "adapters").eval()
    assert torch.allclose(_logps(CausalLMScorer(reloaded), batch), trained, atol=1e-5)
