"""The comparison study end to end on a minimal budget: every artifact, numbers as logged."""

import json
from pathlib import Path

from tiny import TINY as TINY_LLAMA

from lit_align.study.metrics import read_scalars
from lit_align.study.report import cell, interval_text
from lit_align.study.run import StudyConfig, run_study
from lit_align.study.stats import pooled

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = f"--model.policy.config={json.dumps({**TINY_LLAMA, 'num_hidden_layers': 1})}"
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
        generation={"max_new_tokens": 6, "do_sample": True},
    )
    report = Path(run_study(cfg))
    text = report.read_text()
    out = report.parent
    pngs = (
        "win_rates.png",
        "logratios_margins.png",
        "logps_chosen.png",
        "logps_rejected.png",
        "grad_norm.png",
    )
    for name in pngs:
        assert (out / name).stat().st_size > 1000, name
        assert f"]({name})" in text
    results = json.loads((out / "results.json").read_text())
    seed = results["seeds"]["0"]
    for loss in ("DPO", "SPO"):
        scalars = read_scalars(str(out / "seed0" / loss))
        stats = results["stats"][loss][0]
        assert stats["val_reward_accuracy"] == scalars["val_rewards/accuracies"][-1][1]
        assert stats["grad_norm_max"] == max(v for _, v in scalars["grad_norm"])
        assert stats["logratio_max"] == max(v for _, v in scalars["logratios/margins"])
        assert stats["events"] is not None  # the quickstart configs enable the monitor
        assert f"| {loss} |" in text and cell([stats["grad_norm_max"]]) in text
        assert seed["wall_time_s"][loss] > 0 and cell([seed["wall_time_s"][loss]]) in text
        correct, n = seed["heldout_reward_accuracy"][loss]
        assert n == 6 and 0 <= correct <= n
    outcomes = seed["wins"]["SPO"]["DPO"]
    assert len(outcomes) == 6 and interval_text(pooled([outcomes])) in text
    assert "## Findings" in text and "Held-out reward accuracy: highest" in text
    assert "SPO's target" in text and "val_rewards" not in text


def test_one_seed_has_no_interval_and_several_have_one():
    """Two seeds 0.2 and 0.4: mean 0.3, sample std 0.1414, t(0.975, 1) = 12.706, half-width
    12.706 * 0.1414 / sqrt(2) = 1.27."""
    assert cell([0.25]) == "0.25"
    assert cell([0.2, 0.4]) == "0.3 ± 1.3"
    assert cell([None]) == "n/a"


def test_findings_say_when_a_difference_is_noise():
    """60% of 200 ([53.1%, 66.5%]) vs 59.5% overlaps: noise; vs 30% it does not."""
    from lit_align.study.report import ranking

    rates = {
        "SPO": pooled([[1.0] * 120 + [0.0] * 80]),
        "BNF": pooled([[1.0] * 119 + [0.0] * 81]),
        "IPO": pooled([[1.0] * 60 + [0.0] * 140]),
    }
    line = ranking("Win rate against SFT", rates)
    assert line.startswith("- Win rate against SFT: highest SPO (60.0% [53.1%, 66.5%] (n=200))")
    assert "BNF within its 95% interval, so those differences are noise" in line
    assert "IPO clearly below" in line
