"""Batch statistics shared across ranks: KTO's KL estimate and the running mean (BCO's reward
baseline, SPO's score scale).

Two real processes (gloo) each see half of the values; every rank must end with the statistic
of the whole global batch — the value one process computes on all the values at once.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_align.losses._common import RunningMean
from lit_align.losses.kto import KTO

RHO_KL = torch.tensor([0.5, -1.0, 2.0, 0.25, 1.5, -0.5])  # KL rows of the global batch
REWARDS = [torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([-2.0, 0.0, 6.0, 8.0])]  # 2 steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        half = RHO_KL.chunk(2)[rank]
        baseline = RunningMean()
        for step in REWARDS:
            baseline.update(step.chunk(2)[rank])
        out[rank] = (KTO.kl_estimate(half).item(), baseline.mean.item(), baseline.count.item())
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_statistics_match_the_global_batch_on_every_rank():
    """KL = max(0, mean of all 6 values) = 2.75 / 6; δ = mean of all 8 rewards = 22 / 8."""
    manager = mp.Manager()
    out = manager.dict()
    mp.start_processes(_worker, args=(_free_port(), out), nprocs=2, start_method="spawn")
    single = RunningMean()
    for step in REWARDS:
        single.update(step)
    assert KTO.kl_estimate(RHO_KL).item() == pytest.approx(2.75 / 6)
    assert single.mean.item() == pytest.approx(22 / 8)
    for rank in (0, 1):
        kl, mean, count = out[rank]
        assert kl == pytest.approx(2.75 / 6, abs=1e-7)
        assert mean == pytest.approx(22 / 8, abs=1e-7) and count == 8
