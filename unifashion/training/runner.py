"""One training loop for every stage: Accelerate processes, atomic checkpoints, exact resume.

A stage (phase 1a, the caption head, the VAE, ...) is an ``nn.Module`` whose
``forward(batch, generator, shard)`` returns its losses (``"loss"`` is the one
to minimise), plus a way to draw the next *global* batch from a
``torch.Generator``. Every process draws the same global batch from a
generator seeded alike and computes the loss of its ``shard`` of it; losses
over the whole batch (contrastive ones) gather the other processes' rows with
:func:`gather_rows`. Gradients are averaged across processes by DDP (through
``accelerator.prepare``), so N processes at the same global batch follow the
trajectory of one. A stage that names ``fsdp_units`` (the caption stage with
``fsdp = true``) is sharded instead (:mod:`unifashion.training.sharded`): the
same averaging, each process holding a slice of every weight.

A checkpoint (``<folder>/checkpoint``) holds, in safetensors and JSON only:
the trainable weights, the optimiser's moments, the schedule, the step, the
batch generator and the global RNG states, and whatever the stage keeps
(the position in its epoch, an EMA of the weights). It is written atomically
every ``checkpoint_every`` steps; :meth:`StageRunner.run` picks it up when
asked to resume, and continues as if the run had never stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from unifashion.training import sharded
from unifashion.training.loop import LossLog, adamw, cosine_with_warmup, seed_everything
from unifashion.utils.distributed import Shard
from unifashion.utils.errors import ConfigError
from unifashion.utils.hardware import enable_tf32
from unifashion.utils.io import atomic_directory, atomic_write_json

STATE_FILE = "state.json"


class Stage(Protocol):
    """What :class:`StageRunner` needs from a stage."""

    name: str
    total_steps: int
    module: nn.Module  # forward(batch, generator, shard) -> dict of losses; owns the trainable parameters
    fsdp_units: tuple[nn.Module, ...]  # shard these one by one under several processes (empty: plain DDP)

    def next_batch(self, generator: torch.Generator) -> Any: ...

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...  # saved with checkpoints

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None: ...

    def after_step(self) -> None: ...  # e.g. an EMA update

    def finish(self) -> None: ...  # e.g. copy the EMA weights in


class StageBase:
    """Defaults for the optional parts of :class:`Stage`; a stage that is itself the module."""

    # Submodules to shard one by one when the stage runs under several processes (FSDP);
    # empty: plain data parallel, every process holding the whole module.
    fsdp_units: tuple[nn.Module, ...] = ()

    @property
    def module(self):
        return self

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        return None

    def after_step(self) -> None:
        return None

    def finish(self) -> None:
        return None


class EpochStream:
    """Shuffled epochs of index batches, drawn one batch at a time; resumable mid-epoch."""

    def __init__(self, make_epoch: Callable[[torch.Generator], list[torch.Tensor]]):
        self.make_epoch = make_epoch
        self.pending: list[list[int]] = []
        self.epoch = 0

    def next(self, generator: torch.Generator) -> list[int]:
        if not self.pending:
            self.pending = [b.tolist() for b in self.make_epoch(generator)]
            self.epoch += 1
            if not self.pending:
                raise ConfigError("batch_size: larger than the data; no batch can be drawn")
        return self.pending.pop(0)

    def state(self) -> dict[str, Any]:
        return {"pending": self.pending, "epoch": self.epoch}

    def load_state(self, meta: dict[str, Any]) -> None:
        self.pending = [list(b) for b in meta["pending"]]
        self.epoch = int(meta["epoch"])


@dataclass(frozen=True)
class OptimConfig:
    lr: float
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    clip_norm: float = 5.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    schedule: str = "cosine"  # or "constant" after the warm-up

    @classmethod
    def of(cls, cfg, lr: float | None = None, weight_decay: float | None = None, **kw) -> OptimConfig:
        """From a training config's lr, weight_decay, warmup_ratio, adam_betas, adam_eps, lr_schedule."""
        return cls(
            cfg.lr if lr is None else lr,
            cfg.weight_decay if weight_decay is None else weight_decay,
            cfg.warmup_ratio,
            betas=tuple(cfg.adam_betas),
            eps=cfg.adam_eps,
            schedule=cfg.lr_schedule,
            **kw,
        )


def make_accelerator(cpu: bool | None = None):
    """One Accelerator per process (CPU unless CUDA is there; ``cpu=True`` forces it)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if cpu is None:
        cpu = not torch.cuda.is_available()
    if not cpu:
        enable_tf32()
    # Stages may leave some trainable parameters unused in a step (e.g. ITM on
    # no pairs), which plain DDP treats as an error.
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights, whole (sharded ones gathered: every process must call it then)."""
    return {k: sharded.whole(p.detach()).clone().contiguous() for k, p in module.named_parameters() if p.requires_grad}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in sd["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = sharded.whole(value.detach()).clone().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    # Ids number the parameters group after group, as ``state_dict`` does; a moment of a
    # sharded parameter is cut like it.
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for name in sorted(tensors):  # one order on every process (placing a sharded moment is a collective)
        pid, key = name.split(".", 1)
        value = tensors[name]
        param = params[int(pid)]
        if value.shape == param.shape and value.ndim:
            value = sharded.placed_like(value, param)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    meta = {"python": [version, list(words), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def _load_rng(generator: torch.Generator, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    generator.set_state(tensors["generator"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    version, words, gauss = meta["python"]
    random.setstate((version, tuple(words), gauss))
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))


class StageRunner:
    """Runs stages one after another in one Accelerate context, checkpointing into ``folder``
    (``None``: no checkpoints)."""

    def __init__(
        self,
        folder: str | os.PathLike | None,
        log: LossLog,
        *,
        accelerator=None,
        checkpoint_every: int = 0,
        progress: bool = True,
    ):
        self.folder = Path(folder) if folder else None
        self.log = log
        self.accelerator = accelerator or make_accelerator()
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.trained: dict[str, torch.Tensor] | None = None  # the last stage's weights, when it ran sharded
        self.sharding: dict[str, int] | None = None  # and how they were spread (:func:`sharded.footprint`)

    @property
    def shard(self) -> Shard:
        return Shard(self.accelerator.process_index, self.accelerator.num_processes)

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint"

    def resumable(self, stage_name: str) -> int:
        """The step of ``stage_name``'s checkpoint, or 0 when there is none."""
        if self.folder is None:
            return 0
        path = self.checkpoint / STATE_FILE
        if not path.is_file():
            return 0
        meta = json.loads(path.read_text(encoding="utf-8"))
        return int(meta["step"]) if meta.get("stage") == stage_name else 0

    def run(
        self, stage: Stage, optim: OptimConfig, generator: torch.Generator, *, log_every: int = 10, resume: bool = False
    ) -> dict[str, float]:
        """Train ``stage`` for ``stage.total_steps`` steps (continuing its checkpoint if ``resume``);
        returns the last losses, averaged over processes."""
        acc = self.accelerator
        module = stage.module
        if not any(p.requires_grad for p in module.parameters()):
            raise ConfigError(f"stage {stage.name}: nothing to train (every parameter is frozen)")
        sharding = bool(stage.fsdp_units) and acc.num_processes > 1
        if sharding:
            sharded.shard(module, list(stage.fsdp_units), acc.device)
        else:
            module.to(acc.device)
        named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        optimizer = adamw(named, optim.lr, optim.weight_decay, optim.betas, optim.eps)
        warmup = int(optim.warmup_ratio * stage.total_steps)
        schedule = cosine_with_warmup(optimizer, stage.total_steps, warmup, optim.schedule)
        step = 0
        if resume and self.resumable(stage.name):
            step = self._load(stage, module, optimizer, schedule, generator)
            self.log.truncate(stage.name, step)
        wrapped = acc.prepare(module) if acc.num_processes > 1 and not sharding else module
        wrapped.train()
        params = [p for _, p in named]
        bar = tqdm(
            total=stage.total_steps,
            initial=step,
            desc=stage.name,
            leave=False,
            disable=not (self.progress and acc.is_main_process),
        )
        last: dict[str, float] = {}
        while step < stage.total_steps:
            batch = stage.next_batch(generator)
            losses = wrapped(batch, generator, self.shard)
            optimizer.zero_grad(set_to_none=True)
            acc.backward(losses["loss"])
            # The norm of the (all-reduced) gradient before clipping; logged beside the losses,
            # where it shows a gradient that is summed over processes instead of averaged.
            grad_norm = sharded.whole(acc.clip_grad_norm_(params, optim.clip_norm or math.inf))
            optimizer.step()
            schedule.step()
            stage.after_step()
            step += 1
            last = self._mean({k: v.detach().float() for k, v in losses.items()})
            if (step % log_every == 0 or step == stage.total_steps) and acc.is_main_process:
                lr = schedule.get_last_lr()[0]
                self.log.write(stage.name, step, step / stage.total_steps, lr, **last, grad_norm=float(grad_norm))
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            bar.update()
            every = self.checkpoint_every if self.folder is not None else 0
            if every and step % every == 0 and step < stage.total_steps:
                self._save(stage, module, optimizer, schedule, generator, step)
        bar.close()
        module.eval()
        stage.finish()
        # A sharded module stays sharded (its weights are slices of DTensors): what it learnt comes
        # back whole, for the caller to load into an unsharded copy.
        self.trained = trainable_state(module) if sharding else None
        self.sharding = sharded.footprint(module, acc.num_processes) if sharding else None
        return last

    def _mean(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        if self.accelerator.num_processes == 1:
            return {k: float(v) for k, v in losses.items()}
        keys = sorted(losses)
        stacked = self.accelerator.reduce(torch.stack([losses[k] for k in keys]), reduction="mean")
        return {k: float(v) for k, v in zip(keys, stacked, strict=True)}

    def _save(self, stage: Stage, module: nn.Module, optimizer, schedule, generator, step: int) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        # Sharded weights and moments are gathered by every process; the main one writes.
        gather = sharded.is_sharded(module)
        if gather or acc.is_main_process:
            weights = trainable_state(module)
            opt_tensors, opt_meta = _optimizer_tensors(optimizer)
            extra_tensors, extra_meta = stage.state()
            extra_tensors = {k: sharded.whole(v).contiguous() for k, v in extra_tensors.items()}
        if acc.is_main_process:
            with atomic_directory(self.checkpoint) as tmp:
                save_file(weights, tmp / "trainable.safetensors")
                save_file(opt_tensors, tmp / "optimizer.safetensors")
                rng_tensors, rng_meta = _rng_state(generator)
                save_file({k: v.contiguous() for k, v in rng_tensors.items()}, tmp / "rng.safetensors")
                save_file(extra_tensors, tmp / "stage.safetensors")
                meta = {
                    "stage": stage.name,
                    "step": step,
                    "optimizer": opt_meta,
                    "rng": rng_meta,
                    "schedule": schedule.state_dict(),
                    "stage_state": extra_meta,
                }
                atomic_write_json(tmp / STATE_FILE, meta)
        acc.wait_for_everyone()

    def _load(self, stage: Stage, module: nn.Module, optimizer, schedule, generator) -> int:
        folder = self.checkpoint
        meta = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        weights = load_file(folder / "trainable.safetensors")
        missing = [k for k, p in module.named_parameters() if p.requires_grad and k not in weights]
        if missing:
            raise ConfigError(f"{folder}: checkpoint of stage {stage.name} lacks {missing[:3]}")
        with torch.no_grad():
            for k, p in module.named_parameters():  # one order on every process
                if k in weights:
                    p.copy_(sharded.placed_like(weights[k], p))
        _load_optimizer(optimizer, load_file(folder / "optimizer.safetensors"), meta["optimizer"])
        schedule.load_state_dict(meta["schedule"])
        _load_rng(generator, load_file(folder / "rng.safetensors"), meta["rng"])
        stage.load_state(load_file(folder / "stage.safetensors"), meta["stage_state"])
        return int(meta["step"])


def run_stage(
    make_stage: Callable[[], Stage],
    optim: OptimConfig,
    *,
    seed: int,
    log_every: int,
    log: LossLog,
    runner: StageRunner | None = None,
    progress: bool = True,
    resume: bool = False,
) -> dict[str, float]:
    """Seed, build and train one stage: what every ``train_*`` function of phase 1 and 2 shares.
    Without ``runner``, one that keeps no checkpoints and logs to ``log``. Returns the last losses."""
    generator = seed_everything(seed)
    stage = make_stage()
    runner = runner or StageRunner(None, log, progress=progress)
    return runner.run(stage, optim, generator, log_every=log_every, resume=resume)


def device_of(module: nn.Module) -> torch.device:
    """Where ``module``'s weights are (batches are drawn on the CPU and moved there)."""
    return next(module.parameters()).device


class EpochStage(StageBase):
    """A stage whose global batches are rows of shuffled epochs (``self.stream``), resumable mid-epoch."""

    stream: EpochStream

    def next_batch(self, generator: torch.Generator) -> list[int]:
        return self.stream.next(generator)

    def state(self):
        return {}, self.stream.state()

    def load_state(self, tensors, meta) -> None:
        self.stream.load_state(meta)
