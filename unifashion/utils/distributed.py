"""Data parallelism in one place: which rows of a global batch this process computes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unifashion.utils.errors import ConfigError


@dataclass(frozen=True)
class Shard:
    """This process's share of a global batch: the ``rank``-th of ``world`` equal, contiguous slices."""

    rank: int = 0
    world: int = 1

    def bounds(self, size: int) -> tuple[int, int]:
        if size % self.world:
            raise ConfigError(f"batch_size: {size} rows do not split evenly over {self.world} processes")
        per = size // self.world
        return self.rank * per, (self.rank + 1) * per

    def take(self, rows):
        lo, hi = self.bounds(len(rows))
        return rows[lo:hi]


class _GatherRows(torch.autograd.Function):
    """all_gather forward; backward sums every process's gradient of the gathered rows (an
    all-reduce, on a contiguous copy: collectives read raw memory) and keeps this process's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor, shard: Shard) -> torch.Tensor:
    """Every process's ``x`` concatenated along dim 0 in rank order, with the gradient path kept
    (so a loss over the whole batch, such as a contrastive one, is the loss one process would see;
    every process must pass the same number of rows)."""
    if shard.world == 1:
        return x
    return _GatherRows.apply(x)


def shard_token_mean(total: torch.Tensor, tokens: int, shard: Shard) -> torch.Tensor:
    """This process's share of a mean over every process's tokens: ``total`` (a sum over this
    shard's ``tokens``) divided by the whole batch's token count, times ``world`` because the
    gradient all-reduce averages over processes. The mean over processes of the returned
    losses, and of their gradients, is the one-process token mean of the whole batch."""
    if shard.world == 1:
        return total / tokens
    import torch.distributed as dist

    count = torch.tensor([float(tokens)], device=total.device)
    dist.all_reduce(count)
    return total * shard.world / count[0]
