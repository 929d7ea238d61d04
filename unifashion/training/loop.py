"""Small pieces every training phase shares: seeding, optimiser, schedule, autocast, loss log."""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def adamw(
    params: list[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """AdamW without weight decay on biases, norms, embeddings' positions, queries and the temperature."""
    decay, no_decay = [], []
    for name, p in params:
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name.lower() or name.endswith(("query_tokens", "temp")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)


LR_SCHEDULES = ("cosine", "constant")


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, kind: str = "cosine"
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero (paper App. D: the Q-Former and LLM stages), or
    with ``kind="constant"`` the warmed-up rate kept to the end (the paper's U-Net stages)."""
    if kind not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {kind!r}: expected one of {', '.join(LR_SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_for(num_items: int, batch_size: int, epochs: float) -> tuple[int, int]:
    """(batch size, total steps) of ``epochs`` over ``num_items`` (a smaller batch if the data is smaller)."""
    batch = min(batch_size, num_items)
    return batch, max(1, math.ceil(epochs * max(1, num_items // batch)))


class LossLog:
    """One CSV per phase (``<folder>/losses_<phase>.csv``): step, epoch, seconds, lr, losses."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder) if folder else None
        self.start = time.perf_counter()
        self.rows: list[dict] = []

    def write(self, phase: str, step: int, epoch: float, lr: float, **losses: float) -> None:
        row = {
            "phase": phase,
            "step": step,
            "epoch": round(epoch, 4),
            "seconds": round(time.perf_counter() - self.start, 2),
            "lr": lr,
        }
        row.update({k: round(float(v), 6) for k, v in losses.items()})
        self.rows.append(row)
        if self.folder is None:
            return
        path = self.folder / f"losses_{phase}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def truncate(self, phase: str, step: int) -> None:
        """Drop the rows of ``phase`` after ``step`` (a resumed run logs them again)."""
        self.rows = [r for r in self.rows if r["phase"] != phase or r["step"] <= step]
        path = self.folder / f"losses_{phase}.csv" if self.folder else None
        if path is None or not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        fields = list(kept[0]) if kept else None
        if fields is None:
            path.unlink()
            return
        from unifashion.utils.io import atomic_write_text

        lines = [",".join(fields)] + [",".join(r[k] for k in fields) for r in kept]
        atomic_write_text(path, "\n".join(lines) + "\n")


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = True) -> list[torch.Tensor]:
    """Shuffled index batches covering ``range(n)`` once."""
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def grouped_epoch_batches(
    groups: list[str], batch_size: int, generator: torch.Generator, share: float
) -> list[torch.Tensor]:
    """Shuffled batches covering each index at most once, where a ``share`` of the
    items is put into batches of a single group (e.g. one category) and the rest
    into mixed batches. In-batch negatives of a single-category batch differ in
    details only, which is what the random-100 protocol (100 candidates of one
    category) asks a model to tell apart."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share: expected a fraction in [0, 1], got {share}")
    n = len(groups)
    order = torch.randperm(n, generator=generator).tolist()
    cut = round(share * n)
    by_group: dict[str, list[int]] = defaultdict(list)
    for i in order[:cut]:
        by_group[groups[i]].append(i)
    batches: list[list[int]] = []
    mixed = order[cut:]
    for g in sorted(by_group):
        idx = by_group[g]
        full = len(idx) - len(idx) % batch_size
        batches += [idx[k : k + batch_size] for k in range(0, full, batch_size)]
        mixed += idx[full:]  # a group's remainder joins the mixed batches
    mixed = [mixed[k] for k in torch.randperm(len(mixed), generator=generator).tolist()]
    stop = len(mixed) - len(mixed) % batch_size if len(mixed) >= batch_size else len(mixed)
    batches += [mixed[k : k + batch_size] for k in range(0, stop, batch_size)]
    return [torch.tensor(batches[k]) for k in torch.randperm(len(batches), generator=generator).tolist()]
