"""The comparison study end to end on a minimal budget: every artifact, numbers as logged."""

import json
from pathlib import Path

from lit_align.eval.generate import GenerationConfig
from lit_align.study.metrics import read_scalars
from lit_align.study.report import cell
from lit_align.study.run import StudyConfig, run_study

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = (
    "--model.policy.config={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
    "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}"
)
FAST = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
    "--data.builtin_rows=64",
    "--data.batch_size=8",
]


def test_study_writes_every_artifact_with_logged_numbers(tmp_path):
    cfg = StudyConfig(
        output=str(tmp_path / "study"),
        losses={"DPO": {"beta": 0.1}, "SPO": {"beta": 1.0}},
        seeds=[0],
        sft_config=str(CONFIGS / "quickstart_sft.yaml"),
        preference_config=str(CONFIGS / "quickstart.yaml"),
        sft_args=[TINY, "--trainer.max_epochs=1", *FAST],
        preference_args=["--trainer.max_epochs=1", *FAST],
        num_prompts=6,
        num_pairs=6,
        generation=GenerationConfig(max_new_tokens=6, do_sample=True),
    )
    report = Path(run_study(cfg))
    text = report.read_text()
    out = report.parent
    pngs = (
        "logratios_margins.png",
        "rewards_margins.png",
        "logps_chosen.png",
        "logps_rejected.png",
        "grad_norm.png",
    )
    for name in pngs:
        assert (out / name).stat().st_size > 1000, name
        assert f"]({name})" in text
    results = json.loads((out / "results.json").read_text())
    for loss in ("DPO", "SPO"):
        scalars = read_scalars(str(out / "seed0" / loss))
        stats = results["stats"][loss][0]
        logged = scalars["val_rewards/accuracies"][-1][1]
        assert stats["reward_accuracy"] == logged
        assert f"| {loss} |" in text and cell([logged], pct=True) in text
        assert stats["margin_max"] == max(v for _, v in scalars["rewards/margins"])
        assert stats["grad_norm_max"] == max(v for _, v in scalars["grad_norm"])
        assert stats["logratio_max"] == max(v for _, v in scalars["logratios/margins"])
        assert stats["events"] is not None  # the quickstart configs enable the monitor
    win = results["seeds"]["0"]["wins"]["SPO"]["DPO"]
    assert 0.0 <= win <= 1.0 and cell([win], pct=True) in text
    assert "## Findings" in text and "SPO's reward margin ended" in text
