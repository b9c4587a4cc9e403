"""The launcher's process counts checked against --trainer.devices and --trainer.num_nodes."""

from __future__ import annotations

import os

from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

# Launchers that start the processes themselves, and the variable holding processes per node.
_LAUNCHERS = {
    TorchElasticEnvironment: ("torchrun", "LOCAL_WORLD_SIZE"),
    SLURMEnvironment: ("SLURM", "SLURM_NTASKS_PER_NODE"),
}


def launcher_mismatch(
    environment: ClusterEnvironment | None, devices: int, num_nodes: int
) -> str | None:
    """Why the launcher's process counts contradict ``devices``/``num_nodes``; None if they agree.

    Lightning checks nothing when torchrun or SLURM start the processes: a mismatch would hang in
    the rendezvous, crash with an ``IndexError``, or shard over the wrong ranks. Lightning's own
    launcher (``LightningEnvironment``) sizes the world from ``devices`` and ``num_nodes``, so
    there is nothing to check.
    """
    own = environment is None or isinstance(environment, LightningEnvironment)
    if own or not environment.creates_processes_externally:
        return None  # Lightning derives the world size from devices and num_nodes itself
    label, per_node_var = _LAUNCHERS.get(type(environment), (type(environment).__name__, ""))
    world = environment.world_size()
    raw = os.environ.get(per_node_var, "")
    per_node = int(raw) if raw.isdigit() else None
    expected = devices * num_nodes
    if world == expected and per_node in (None, devices) and environment.local_rank() < devices:
        return None
    started = f"{world} processes" + (f" ({per_node} per node)" if per_node else "")
    hint = (
        f" (here: --trainer.devices={per_node} --trainer.num_nodes={world // per_node})"
        if per_node
        else ""
    )
    return (
        f"{label} started {started}, but the trainer expects --trainer.num_nodes={num_nodes} x "
        f"--trainer.devices={devices} = {expected}. Set --trainer.devices to the processes per "
        f"node and --trainer.num_nodes to the number of nodes{hint}."
    )
