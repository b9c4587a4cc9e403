"""The logged ``loss`` is the mean over ranks: 2 ranks (torchrun, gloo, DDP) log what 1 process
logs on the same global batches (SFT, 4 steps, global batch 8 = 2 x 4, every step logged).

Each rank's own batch loss differs from the global one (checked, so the comparison is not
vacuous); the logged value is identical on both ranks and equals the 1-process value to 1e-5.
"""

from __future__ import annotations

import json

import pytest
import yaml
from launch import LIT_ALIGN, TORCHRUN, clean_env, finish, kill, start
from resume_runs import recorder_env
from tiny import TINY

pytestmark = pytest.mark.distributed

TOL = 1e-5
CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "max_steps": 4,
        "logger": False,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "limit_val_batches": 0,
    },
    "model": {
        "policy": {"tokenizer": "builtin:sort", "config": dict(TINY)},
        "loss": "lit_align.losses.SFT",  # per-batch NLL: the ranks' losses differ from step 0
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}},
    },
    "data": {"dataset": "builtin:sort", "builtin_rows": 32, "max_length": 64},
}


@pytest.fixture(scope="module")
def losses(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("global_loss")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))

    def args(name: str, devices: int, batch: int) -> list[str]:
        return [
            "fit",
            f"--config={config}",
            "--trainer.strategy=ddp",
            f"--trainer.devices={devices}",
            f"--data.batch_size={batch}",
            f"--trainer.default_root_dir={tmp / name}",
            "--trainer.callbacks+=_logged_loss.LoggedLoss",
            f"--trainer.callbacks.dirpath={tmp / name}",
        ]

    env = recorder_env(clean_env())
    procs = {
        "one": start([*LIT_ALIGN, *args("one", 1, 8)], tmp / "one.log", env),
        "two": start([*TORCHRUN, "-m", "lit_align.cli", *args("two", 2, 4)], tmp / "two.log", env),
    }
    try:
        finish(procs["one"], tmp / "one.log", [tmp / "one" / "loss-rank0.json"])
        ranks = [tmp / "two" / f"loss-rank{r}.json" for r in (0, 1)]
        finish(procs["two"], tmp / "two.log", ranks)
    finally:
        for proc in procs.values():
            kill(proc)
    read = lambda path: json.loads(path.read_text())  # noqa: E731
    return {"one": read(tmp / "one" / "loss-rank0.json"), "two": [read(p) for p in ranks]}


def test_logged_loss_is_the_mean_over_ranks(losses):
    one, (r0, r1) = losses["one"], losses["two"]
    assert len(one["logged"]) == len(r0["logged"]) == 4
    assert r0["logged"] == r1["logged"]  # one global value, on every rank
    d_logged = max(abs(a - b) for a, b in zip(r0["logged"], one["logged"]))
    d_local = max(abs(a - b) for a, b in zip(r0["local"], one["logged"]))
    print(f"\n2 ranks vs 1: logged loss max |d| {d_logged:.1e} (rank 0's own loss: {d_local:.1e})")
    assert d_logged < TOL
    assert d_local > 100 * TOL  # rank 0's own loss is not the global one
    means = [(a + b) / 2 for a, b in zip(r0["local"], r1["local"])]
    assert max(abs(a - b) for a, b in zip(means, r0["logged"])) < TOL
