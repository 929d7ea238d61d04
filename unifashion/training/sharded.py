"""Fully sharded data parallel (FSDP) for a stage whose frozen part does not fit one device.

A 7B LLM in bf16 is 14 GB before activations; its LoRA, AdamW's moments and the
activations of a batch do not fit beside it on a 24 GB card, nor the whole in fp32
on a 40 GB one. Sharded, each of N processes keeps 1/N of every weight, gradient
and moment and gathers one transformer block at a time while it computes.

Sharding is PyTorch's own (``torch.distributed.fsdp.fully_shard``): each block the
model declares unsplittable (``_no_split_modules`` of a transformers model) is one
unit, the rest of the stage one more. A sharded weight is a ``DTensor``; checkpoints
hold whole tensors (:func:`whole`, gathered on every process) so that a run can
resume under another number of processes, or unsharded, and every process takes
its own slice back (:func:`placed_like`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """The submodules of ``module`` whose class a transformers model inside it names in
    ``_no_split_modules`` (its decoder layers), outermost first; empty when there is none."""
    names: set[str] = set()
    for sub in module.modules():
        names.update(getattr(sub, "_no_split_modules", None) or ())
    return [sub for sub in module.modules() if type(sub).__name__ in names]


def shard(module: nn.Module, units: list[nn.Module], device: torch.device) -> None:
    """Shard ``module`` over every process of the default process group, ``units`` each on
    its own; the weights land on ``device`` (one unit at a time, so the whole module is never
    on it at once)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not units:
        raise ValueError("shard: no units (a model without transformer blocks is not worth sharding)")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(module, mesh=mesh)


def is_sharded(module: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def footprint(module: nn.Module, processes: int) -> dict[str, int]:
    """How many weights ``module`` has, and how many of them this process holds."""
    here = sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in module.parameters())
    return {"processes": processes, "weights": sum(p.numel() for p in module.parameters()), "weights_here": here}


def whole(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded one (a collective: every process must call it, in the same
    order); any other tensor as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def placed_like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor of ``param``'s shape) cut the way ``param`` is sharded (a
    collective when ``param`` is sharded); ``value`` itself otherwise."""
    if not isinstance(param, DTensor):
        return value
    if tuple(value.shape) != tuple(param.shape):
        raise ValueError(f"placed_like: a tensor of shape {tuple(value.shape)} for one of {tuple(param.shape)}")
    return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
