"""One DPO step on SmolLM2-135M-Instruct and real UltraFeedback pairs through the ``lit-align``
CLI (parsed and instantiated by LightningCLI, as ``lit-align fit`` does): the loss at step 0 is
ln 2 (policy = reference), the optimizer step changes what it trains (full fine-tuning, or
only the LoRA adapters), the precomputed reference equals the on-the-fly one, and the exported
model loads with ``from_pretrained``, gives the trained policy's logits and still answers a
factual question under the chat template.

Runs are single steps at ``max_length`` 64 on 8 pairs: forward passes, not training.
"""

import math

import pytest
import torch
from lightning.pytorch import Callback
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_align.callbacks import HFExport
from lit_align.lightning_cli import run_lightning_cli

pytestmark = [
    pytest.mark.real,
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
]

VARIANTS = {
    "full": [],
    "lora": ["--model.policy.lora.r=4"],
    "precomputed": ["--model.reference=precomputed"],
}


class StepRecorder(Callback):
    """The first step's record and precomputed reference sums, and the trainable weights
    before training (read-only)."""

    def __init__(self) -> None:
        self.records, self.reference_sums, self.before = [], [], {}

    def on_train_start(self, trainer, pl_module) -> None:
        named = pl_module.policy.named_parameters()
        self.before = {n: p.detach().clone() for n, p in named if p.requires_grad}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch.reference_logps is not None:
            self.reference_sums.append(batch.reference_logps.sum.clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.records.append(outputs["record"])


@pytest.fixture(scope="module")
def pairs(ultrafeedback, tmp_path_factory):
    """The first 8 UltraFeedback training pairs (whole conversations with scores)."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    lines = (ultrafeedback / "train.jsonl").read_text().splitlines()[:8]
    path.write_text("\n".join(lines) + "\n")
    return path


def _fit(variant: str, model_dir, pairs, tmp) -> tuple:
    """A single-step ``fit``: (module, recorder, export directory)."""
    args = [
        "--seed_everything=0",
        f"--model.policy.pretrained={model_dir}",
        "--model.loss=DPO",
        "--model.loss.beta=0.1",
        "--model.optimizer.lr=1e-6",
        f"--data.dataset={pairs}",
        "--data.format=conversational",
        "--data.max_length=64",
        "--data.batch_size=2",
        f"--data.cache_dir={tmp / 'cache'}",
        "--trainer.max_steps=1",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp}",
        *VARIANTS[variant],
    ]
    cli = run_lightning_cli(args, run=False)
    recorder = StepRecorder()
    cli.trainer.callbacks += [recorder, HFExport(dirpath=str(tmp / "export"))]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.model, recorder, tmp / "export"


@pytest.fixture(scope="module")
def fit(real_model_dir, pairs, tmp_path_factory):
    """``fit(variant)``: the variant's single-step run, made once per module."""
    runs: dict[str, tuple] = {}

    def get(variant: str) -> tuple:
        if variant not in runs:
            tmp = tmp_path_factory.mktemp(variant)
            runs[variant] = _fit(variant, real_model_dir, pairs, tmp)
        return runs[variant]

    return get


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_first_step_loss_is_ln2_and_the_step_trains_what_it_should(variant, fit, real_model):
    module, recorder, _ = fit(variant)
    (record,) = recorder.records
    print(f"\n{variant}: step-0 DPO loss {record.loss.item():.7f} (ln 2 = {math.log(2):.7f})")
    assert record.loss.item() == pytest.approx(math.log(2), abs=1e-6)
    after = dict(module.policy.named_parameters())
    changed = {n for n, before in recorder.before.items() if not torch.equal(after[n], before)}
    if variant == "lora":
        assert recorder.before and all("lora_" in n for n in recorder.before)
        assert any("lora_B" in n for n in changed)
        base = real_model.state_dict()  # as loaded from the checkpoint
        frozen = module.policy.model.get_base_model().state_dict()
        frozen = {k.replace(".base_layer", ""): v for k, v in frozen.items() if "lora_" not in k}
        assert frozen.keys() == base.keys()
        assert all(torch.equal(frozen[k], v) for k, v in base.items())
    else:
        assert len(changed) > 0.9 * len(recorder.before)  # embeddings, norms, projections


def test_precomputed_reference_equals_the_on_the_fly_one(fit):
    """Step 0: the reference is the initial policy, so on-the-fly reference log-probs equal the
    policy's (chosen, rejected) sums, which the precomputed run must reproduce."""
    _, precomputed, _ = fit("precomputed")
    _, on_the_fly, _ = fit("full")
    (cached,) = precomputed.reference_sums
    (record,) = on_the_fly.records
    policy = torch.cat([record.chosen_logps, record.rejected_logps])  # (2B,): the batch layout
    diff = (cached - policy).abs().max().item()
    print(f"\nprecomputed vs on-the-fly reference: max |dlogp sum| {diff:.2e}")
    assert diff <= 1e-3  # sums of up to 60 token log-probs in float32
    assert precomputed.records[0].log_ratio_margins.abs().max() <= 1e-3
    assert torch.equal(record.log_ratio_margins, torch.zeros(2))


def test_export_loads_with_identical_logits_and_answers_under_the_chat_template(fit):
    module, _, export = fit("full")
    exported = AutoModelForCausalLM.from_pretrained(export).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids  # (1, T)
    live = module.policy.model.eval()
    with torch.no_grad():
        assert torch.equal(exported(input_ids=ids).logits, live(input_ids=ids).logits)
        answer = exported.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
    text = tokenizer.decode(answer, skip_special_tokens=True)
    print(f"\ngreedy answer: {text!r}")
    assert "Paris" in text
