"""``unifashion train --config CONFIG --out MODEL``: the paper's two phases end to end, resumable.

Stages, in order (ARCHITECTURE.md, "Training phases"):

1. ``phase1a``: Q-Former + queries on image-caption pairs (ITC + ITM); the vision encoder is frozen.
2. ``phase1b_caption``: Q-Former frozen; caption adapter f_theta + the LLM's LoRA (ITG).
3. ``phase1b_vae`` then ``phase1b_<task>`` per image head: Q-Former frozen; image adapter f_zeta +
   U-Net (q2I). ``mini`` trains its VAE first; ``paper`` loads Stable Diffusion's.
4. ``phase2``: LLM (with its LoRA), U-Net and VAE frozen; Q-Former + both adapters on triplets with
   L_cir + ITG + q2I (Eq. 13).

The model grows in ``<out>.work/model`` (a loadable checkpoint after every stage); the stage in
progress checkpoints into ``<out>.work/checkpoint`` every ``checkpoint_every`` steps. ``--resume``
skips the finished stages and continues the current one where its checkpoint left it (weights,
optimiser, schedule, RNG and data position). At the end the model takes ``<out>``'s place in one
rename, with the config, the seeds and the loss logs (``logs/losses_<stage>.csv``) inside.

Under ``torchrun`` / ``accelerate launch`` every process runs this same function; each computes
its shard of every global batch and the main process writes the files.

This is the only orchestrator: ``unifashion train retrieval | captioning | generation`` are stage
selections of it (``retrieval_part``, ``captioning_part``, ``generation_part`` at the end).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unifashion.backbones.diffusion import load_vae
from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.checkpoint import (
    CAPTION_FOLDER,
    CONFIG_FILE,
    HEAD_FOLDERS,
    LOGS_FOLDER,
    VAE_FOLDER,
    add_heads,
    extended_checkpoint,
)
from unifashion.config import (
    CaptionTrainingConfig,
    GenerationTrainingConfig,
    ModelConfig,
    RetrievalTrainingConfig,
    from_dict,
    get_preset,
    to_dict,
)
from unifashion.data.formats import read_split
from unifashion.models.captioner import Captioner
from unifashion.models.generator import build_vae
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.generation import load_image_head, load_pixels
from unifashion.pipelines.retrieval import image_queries
from unifashion.training import phase1, phase2
from unifashion.training.data import (
    caption_items,
    inpaint_data,
    inpaint_samples,
    pair_items,
    person_hw,
    product_hw,
    text2image_data,
    triplet_items,
)
from unifashion.training.loop import LossLog, seed_everything
from unifashion.training.runner import StageRunner, make_accelerator
from unifashion.utils.errors import ConfigError, UniFashionError
from unifashion.utils.io import atomic_directory, atomic_write_json


@dataclass(frozen=True)
class RunConfig:
    """Where the data is and how the run behaves."""

    data: str = ""
    format: str | None = None
    split: str = "train"
    preset: str = "mini"
    # One seed for every stage (each stage derives its own from it).
    seed: int = 0
    # Write a resumable checkpoint of the running stage every N steps (0: only at stage ends).
    checkpoint_every: int = 100
    progress: bool = True
    # Start from this model folder instead of fresh weights (its heads are kept unless retrained).
    init_from: str | None = None
    # Run only these stages (e.g. ["phase2"] with init_from); empty: every stage.
    stages: tuple[str, ...] = ()
    # Frozen image features of the training tables as one memory-mapped file per table (written
    # once, by rank 0) instead of a copy in every process's RAM: for large datasets and big
    # encoders (ViT-g: 0.72 MB an image).
    feature_memmap: bool = False


@dataclass(frozen=True)
class Phase2Config:
    """Eq. 13's extra terms in phase 2, through the frozen heads of phase 1b."""

    with_heads: bool = True
    itg_weight: float = 1.0
    q2i_weight: float = 1.0
    # ITG and q2I see the first rows of each batch only: the LLM and the U-Net cost far more per
    # row than the Q-Former.
    itg_rows: int = 8
    q2i_rows: int = 16
    # The caption adapter f_theta trains in phase 2 (the paper); false: it stays as phase 1b left it
    # and ITG's gradient reaches the Q-Former only.
    itg_adapter: bool = True
    # Rows per batch whose target image alone (Z_I, the path of plain captioning) also gets ITG of its
    # caption (Eq. 6 again), so that phase 2 keeps the image -> caption path it was trained on.
    itg_image_rows: int = 4
    # Share of phase 2's change to the weights it trains (Q-Former and adapters) that is kept:
    # w = w_before + blend * (w_trained - w_before), weight-space ensembling of phase 2 with the model
    # it started from (WiSE-FT, Wortsman et al., 2022). 1: phase 2's weights as trained.
    blend: float = 1.0


@dataclass(frozen=True)
class PipelineConfig:
    run: RunConfig = field(default_factory=RunConfig)
    # Changes to the preset's model config, e.g. {"qformer": {"dropout": 0.0}}.
    model: Any = field(default_factory=dict)
    retrieval: RetrievalTrainingConfig = field(default_factory=RetrievalTrainingConfig)
    captioning: CaptionTrainingConfig = field(default_factory=CaptionTrainingConfig)
    # Train the caption head (phase 1b) at all.
    with_captioning: bool = True
    generation: GenerationTrainingConfig = field(default_factory=GenerationTrainingConfig)
    phase2: Phase2Config = field(default_factory=Phase2Config)

    def seeded(self) -> PipelineConfig:
        """Every stage's seed follows ``run.seed``."""
        s = self.run.seed
        return dataclasses.replace(
            self,
            retrieval=dataclasses.replace(self.retrieval, seed=s),
            captioning=dataclasses.replace(self.captioning, seed=s),
            generation=dataclasses.replace(self.generation, seed=s),
        )

    def model_config(self):
        """The preset with ``model``'s changes (names the field at fault)."""
        base = to_dict(get_preset(self.run.preset))
        return ModelConfig.from_dict(_merged(base, self.model, "model"), where="model")

    def check(self, where: str) -> None:
        """Errors that name the field at fault, before any work starts."""
        if not self.run.data:
            raise ConfigError(f"{where}: run.data: the dataset folder is required")
        self.model_config()  # names the preset or model field at fault
        known = {
            "phase1a",
            "phase1b_caption",
            "phase1b_vae",
            "phase2",
            *(f"phase1b_{t}" for t in self.generation.tasks),
        }
        for section in ("retrieval", "captioning", "generation"):
            betas = getattr(self, section).adam_betas
            if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
                raise ConfigError(f"{where}: {section}.adam_betas: two numbers in [0, 1), got {list(betas)}")
        if not 0.0 < self.phase2.blend <= 1.0:
            raise ConfigError(f"{where}: phase2.blend: a share of phase 2's change in (0, 1], got {self.phase2.blend}")
        unknown = sorted(set(self.run.stages) - known)
        if unknown:
            raise ConfigError(
                f"{where}: run.stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if self.run.stages and "phase1a" not in self.run.stages and not self.run.init_from:
            raise ConfigError(f"{where}: run.stages without phase1a needs run.init_from (a model to start from)")
        if self.generation.continue_heads and (not self.run.init_from or "phase1b_vae" in (self.run.stages or known)):
            raise ConfigError(
                f"{where}: generation.continue_heads needs run.init_from (a model with image heads) and run.stages "
                "without phase1b_vae (its heads continue only on its own VAE)"
            )

    def digest(self) -> str:
        """What a resumed run must share with the run it continues (everything but progress bars)."""
        body = to_dict(dataclasses.replace(self, run=dataclasses.replace(self.run, progress=True)))
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _merged(base: dict[str, Any], changes: Any, where: str) -> dict[str, Any]:
    if not isinstance(changes, dict):
        raise ConfigError(f"{where}: expected a table of changes, got {changes!r}")
    out = dict(base)
    for key, value in changes.items():
        if key not in base:
            raise ConfigError(f"{where}.{key}: unknown; known: {', '.join(sorted(base))}")
        out[key] = _merged(base[key], value, f"{where}.{key}") if isinstance(base[key], dict) else value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    """``SECTION.KEY=VALUE`` strings (VALUE in TOML syntax; a bare word is a string) into ``raw``."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        node = raw
        *parents, last = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: --set {item!r}: {part} is not a section")
        node[last] = parsed
    return raw


def _yaml_loader():
    """PyYAML's safe loader, reading ``1e-06`` as a number as YAML 1.2 and JSON do (YAML 1.1 wants a
    dot in the mantissa and reads it as a string; a checkpoint's JSON config writes it so)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # Tried after YAML 1.1's own number forms, so integers stay integers.
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
    )
    return Loader


def load_pipeline_config(path: str | os.PathLike, overrides: list[str] | None = None) -> PipelineConfig:
    """A TOML or YAML file with the sections of :class:`PipelineConfig` (every one optional),
    with ``overrides`` (see :func:`apply_overrides`) applied."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    if path.suffix.lower() == ".toml":
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    elif path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.load(text, Loader=_yaml_loader()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    else:
        raise ConfigError(f"{path}: expected a .toml, .yaml or .yml file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected sections of keys at the top level")
    cfg = from_dict(PipelineConfig, apply_overrides(raw, list(overrides or []), str(path)), where=str(path))
    cfg.check(str(path))
    return cfg


class Pipeline:
    """One run of :func:`train_pipeline`: its folders, its progress and its stage runner."""

    def __init__(self, cfg: PipelineConfig, out: Path, resume: bool, accelerator, on_stage_end=None):
        self.cfg, self.out = cfg, out
        self.work = out.parent / f"{out.name}.work"
        self.model_dir = self.work / "model"
        # Write-once memory-mapped tables of VAE latents and try-on inputs, shared by stages and processes.
        self.tables = self.work / "tables"
        self.acc = accelerator
        self.progress_file = self.work / "progress.json"
        self.done: list[str] = []
        self.summary: dict[str, Any] = {}
        if resume and self.progress_file.is_file():
            state = json.loads(self.progress_file.read_text(encoding="utf-8"))
            if state["digest"] != cfg.digest():
                raise ConfigError(
                    f"{self.work}: was started with another config; resume it with the same one, or start afresh"
                )
            self.done, self.summary = state["done"], state["summary"]
        elif self.acc.is_main_process:
            shutil.rmtree(self.work, ignore_errors=True)
            if cfg.run.init_from:
                source = Path(cfg.run.init_from)
                if not (source / CONFIG_FILE).is_file():
                    raise ConfigError(f"run.init_from: {source} is not a model folder (no config.json)")
                shutil.copytree(source, self.model_dir, ignore=shutil.ignore_patterns(LOGS_FOLDER))
            # Written before the first stage, so that a run killed inside it resumes from its checkpoint.
            self._write_progress()
        self.acc.wait_for_everyone()
        self.log = LossLog(self.work / LOGS_FOLDER)
        self.runner = StageRunner(
            self.work,
            self.log,
            accelerator=accelerator,
            checkpoint_every=cfg.run.checkpoint_every,
            progress=cfg.run.progress,
        )
        self.resume = resume
        self.on_stage_end = on_stage_end

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    def finished(self, stage: str, summary: dict[str, Any]) -> None:
        """Record ``stage`` as done (after its weights are in ``model_dir``)."""
        self.done.append(stage)
        self.summary[stage] = summary
        if self.main:
            self._write_progress()
            shutil.rmtree(self.work / "checkpoint", ignore_errors=True)
            if self.on_stage_end is not None:
                self.on_stage_end(stage, self.model_dir)
        self.acc.wait_for_everyone()

    def _write_progress(self) -> None:
        atomic_write_json(self.progress_file, {"digest": self.cfg.digest(), "done": self.done, "summary": self.summary})

    def skip(self, name: str, reason: str) -> None:
        """Stage ``name`` cannot run on this data: said in the summary and on the terminal, nothing trained."""
        if self.cfg.run.stages and name not in self.cfg.run.stages:
            return
        self.summary[name] = {"skipped": reason}
        if self.main:
            print(f"{name}: skipped, {reason}", flush=True)

    def run_stage(self, name: str, fn) -> None:
        """``fn(resume)`` trains stage ``name`` unless it is done; returns its summary."""
        if name in self.done or (self.cfg.run.stages and name not in self.cfg.run.stages):
            return
        t0 = time.perf_counter()
        result = fn(self.resume and self.runner.resumable(name) > 0)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        self.finished(name, result)


def trainable_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def finished_summary(model: str | os.PathLike, cfg: PipelineConfig) -> dict[str, Any] | None:
    """The training summary of ``model`` when it is a finished run of ``cfg`` (the whole config
    compared, seed included), else None: how a resumed recipe knows a model it need not train again."""
    path = Path(model) / CONFIG_FILE
    if not path.is_file():
        return None
    done = json.loads(path.read_text(encoding="utf-8")).get("training", {}).get("pipeline", {})
    if done.get("config") != to_dict(cfg.seeded()):
        return None
    return done.get("summary")


def train_pipeline(
    cfg: PipelineConfig, out: str | os.PathLike, *, resume: bool = False, accelerator=None, on_stage_end=None
) -> dict[str, Any]:
    """Train every stage of ``cfg`` and write the model to ``out`` (see the module docstring).
    ``on_stage_end(stage, folder)`` is called (main process) when a stage's weights are in the
    loadable checkpoint ``folder``, e.g. to evaluate or copy it."""
    cfg.check("config")
    cfg = cfg.seeded()
    check_output(Path(out))
    started = time.perf_counter()
    acc = accelerator or make_accelerator()
    p = Pipeline(cfg, Path(out), resume, acc, on_stage_end)
    data = read_split(cfg.run.data, cfg.run.split, cfg.run.format)
    progress = cfg.run.progress and p.main

    if "phase1a" in p.done or (p.model_dir / CONFIG_FILE).is_file():
        model = RetrievalModel.from_pretrained(p.model_dir)
    else:
        seed_everything(cfg.run.seed)  # the Q-Former's fresh weights (tiny) and anything random in building
        model = RetrievalModel.build(cfg.model_config())
    cache = FeatureCache(model.vision, memmap=cfg.run.feature_memmap)
    tables: list[FeatureTable] = []

    def feature_table() -> FeatureTable:
        """Frozen features of every product image, read once, for the stages that train the Q-Former."""
        if not tables:
            tables.append(FeatureTable.build([r for q in data.products for r in q.images], cache, progress=progress))
        return tables[0]

    def phase1a(resume_stage: bool) -> dict[str, Any]:
        if cfg.retrieval.phase1_epochs <= 0 or not any(q.captions for q in data.products):
            # Zero epochs (or nothing captioned): the fresh model goes on as it is, as `train retrieval` always did.
            if p.main:
                model.save_pretrained(p.model_dir, extra={"training": {"pipeline": to_dict(cfg)}})
            acc.wait_for_everyone()
            return {"skipped": "retrieval.phase1_epochs is 0 or the split has no captions"}
        table = feature_table()
        last = phase1.train_phase1a(
            model,
            pair_items(data, table),
            table,
            cfg.retrieval,
            p.log,
            progress=progress,
            runner=p.runner,
            resume=resume_stage,
        )
        if p.main:
            model.save_pretrained(p.model_dir, extra={"training": {"pipeline": to_dict(cfg)}})
        acc.wait_for_everyone()
        return {"last": last, "trainable_parameters": trainable_count(model.qformer)}

    p.run_stage("phase1a", phase1a)
    if cfg.with_captioning:
        p.run_stage("phase1b_caption", lambda r: _caption_stage(p, model, data, cache, r))
    tasks = tuple(cfg.generation.tasks)
    if tasks:
        p.run_stage("phase1b_vae", lambda r: _vae_stage(p, model, data, r))
        for task in tasks:
            if task != "text2image" and not inpaint_samples(data, task):
                sketch = ", with a sketch and a text" if task == "design" else ""
                needs = f"paired try-on samples (tryon.jsonl){sketch}"
                p.skip(f"phase1b_{task}", f"the data has no {needs}: no {task} head")
                continue
            p.run_stage(f"phase1b_{task}", lambda r, task=task: _head_stage(p, model, data, cache, task, r))
    if cfg.retrieval.phase2_epochs > 0 and any(t.target for t in data.triplets):
        p.run_stage("phase2", lambda r: _phase2_stage(p, model, data, feature_table(), cache, r))
    elif cfg.retrieval.phase2_epochs > 0:
        p.skip("phase2", "the data has no triplets with a target (triplets.jsonl): no composed-retrieval training")
    p.summary["seconds_this_run"] = round(time.perf_counter() - started, 1)
    if p.main:
        _finish(p)
    acc.wait_for_everyone()
    return p.summary


def _save_heads(p: Pipeline, **heads) -> None:
    """Add heads to the growing model (main process), then let every process go on."""
    if p.main:
        add_heads(p.model_dir, p.model_dir, **heads)
    p.acc.wait_for_everyone()


def _caption_stage(p: Pipeline, model, data, cache, resume: bool) -> dict[str, Any]:
    cfg = p.cfg.captioning
    model.eval().qformer.requires_grad_(False)
    table = image_queries(
        model,
        [r for q in data.products for r in q.images],
        cache,
        bf16=cfg.bf16,
        progress=p.cfg.run.progress and p.main,
    )
    llm = phase1.with_lora(model.config.llm, cfg.lora_rank, cfg.lora_alpha)

    def build() -> Captioner:  # the same frozen weights and starting LoRA every time
        seed_everything(cfg.seed + 10)
        return Captioner.build(llm, model.config.qformer.hidden_size)

    captioner = build()
    if cfg.lora_init:
        captioner.load_lora(cfg.lora_init)
    if cfg.gradient_checkpointing:
        captioner.enable_gradient_checkpointing()
    last = phase1.train_phase1b_captioner(
        captioner, caption_items(data, table, cfg.styles), table, cfg, p.log, runner=p.runner, resume=resume
    )
    if p.runner.trained is not None:  # trained sharded (FSDP): what it learnt, whole, into an unsharded copy
        del captioner
        captioner = build()
        captioner.set_trainable(adapter=True, lora=True)
        _load_trained(captioner, p.runner.trained, prefix="captioner.")
        captioner.eval()
    _save_heads(p, captioner=captioner, training={"captioning": to_dict(cfg)})
    summary = {"last": last, "trainable_parameters": trainable_count(captioner)}
    if p.runner.trained is not None:
        summary["fsdp"] = p.runner.sharding
    return summary


def _load_trained(module: nn.Module, trained: dict[str, torch.Tensor], prefix: str) -> None:
    """Copy a stage's trained weights (named from the stage, ``prefix`` + the module's names) into
    ``module``'s trainable parameters; every one must be there and nothing else."""
    weights = {k.removeprefix(prefix): v for k, v in trained.items()}
    names = {k for k, q in module.named_parameters() if q.requires_grad}
    if names != set(weights):
        raise ConfigError(
            f"trained weights do not fit: missing {sorted(names - set(weights))[:3]}, "
            f"unexpected {sorted(set(weights) - names)[:3]}"
        )
    with torch.no_grad():
        for k, q in module.named_parameters():
            if k in weights:
                q.copy_(weights[k])


def _vae_stage(p: Pipeline, model, data, resume: bool) -> dict[str, Any]:
    dcfg, cfg = model.config.diffusion, p.cfg.generation
    if dcfg.source:  # paper: Stable Diffusion's VAE, nothing to train
        vae = load_vae(dcfg.vae_source or dcfg.source).eval()
        _save_heads(p, vae=vae, training={"generation": to_dict(cfg)})
        return {"pretrained": dcfg.vae_source or dcfg.source}
    products = list({str(r): r for q in data.products for r in q.images}.values())
    persons = list({str(s.person): s.person for s in data.tryon}.values())
    pools = [load_pixels(products, product_hw(dcfg.image_size)), load_pixels(persons, person_hw(dcfg.image_size))]
    seed_everything(cfg.seed + 20)
    vae = build_vae(dcfg)
    last = phase1.train_vae(vae, pools, cfg, p.log, runner=p.runner, resume=resume)
    probe = pools[0][:: max(1, len(pools[0]) // 1000)]
    scale = phase1.latent_scale(vae, probe)
    vae.register_to_config(scaling_factor=scale)
    _save_heads(p, vae=vae, training={"generation": to_dict(cfg)})
    return {"last": last, "latent_scale": scale, "train_fidelity": phase1.vae_colour_fidelity(vae, probe[:500])}


def _load_vae(folder: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(os.fspath(folder / VAE_FOLDER), use_safetensors=True).eval()


def _head_stage(p: Pipeline, model, data, cache, task: str, resume: bool) -> dict[str, Any]:
    dcfg, cfg = model.config.diffusion, p.cfg.generation
    vae = _load_vae(p.model_dir)
    hw = product_hw(dcfg.image_size) if task == "text2image" else person_hw(dcfg.image_size)
    seed_everything(cfg.seed + 30 + sorted(HEAD_FOLDERS).index(task))
    # With continue_heads the head in model_dir is run.init_from's (checked in PipelineConfig.check).
    start = phase1.inpaint_start(p.model_dir, task, cfg)
    head = phase1.head_to_train(
        p.model_dir, task, dcfg, model.config.qformer.hidden_size, hw, vae, float(vae.config.scaling_factor), cfg
    )
    if cfg.gradient_checkpointing:
        head.unet.enable_gradient_checkpointing()
    model.eval().qformer.requires_grad_(False)
    progress = p.cfg.run.progress and p.main
    head.to(p.acc.device)  # the targets are VAE-encoded where the head trains, not on the CPU
    if task == "text2image":
        prepared, steps = text2image_data(model, head, data, cache, progress, tables=p.tables), cfg.steps
    else:
        prepared = inpaint_data(model, head, data, cache, progress, tables=p.tables)
        steps = cfg.tryon_steps if task == "tryon" else cfg.design_steps
    last = phase1.train_head(model, head, prepared, steps, cfg, p.log, runner=p.runner, resume=resume)
    _save_heads(p, vae=vae, image_heads={task: head}, training={"generation": to_dict(cfg)})
    continued = {"continued_from": str(Path(p.cfg.run.init_from) / HEAD_FOLDERS[task])} if cfg.continue_heads else {}
    if start is not None:  # the model's own text2image head, as it was when this stage began
        continued["started_from"] = f"{start.name}/"
    return {
        **continued,
        "steps": steps,
        "last": last,
        "trainable_parameters": trainable_count(head.image_adapter)
        + trainable_count(head.unet)
        + head.null_condition.numel(),
    }


def _phase2_stage(p: Pipeline, model, data, table, cache, resume: bool) -> dict[str, Any]:
    cfg, heads = p.cfg.phase2, {}
    captioner = image_head = None
    if cfg.with_heads and (p.model_dir / CAPTION_FOLDER).is_dir():
        captioner = Captioner.from_pretrained(p.model_dir / CAPTION_FOLDER)
        itg = ("itg_rows", "itg_weight", "itg_adapter", "itg_image_rows")
        heads.update(captioner=captioner, **{name: getattr(cfg, name) for name in itg})
    if cfg.with_heads and (p.model_dir / HEAD_FOLDERS["text2image"]).is_dir():
        image_head = load_image_head(p.model_dir, "text2image").to(p.acc.device)
        # The text2image stage's latent table, when the VAE and the images are the same: nothing to encode.
        prepared = text2image_data(model, image_head, data, cache, p.cfg.run.progress and p.main, tables=p.tables)
        heads.update(
            image_head=image_head,
            latents=prepared.latents,
            latent_rows=prepared.rows,
            q2i_rows=cfg.q2i_rows,
            q2i_weight=cfg.q2i_weight,
        )
    items = triplet_items(data, table)
    model.qformer.requires_grad_(True)
    # The weights phase 2 trains, as it finds them (a resumed phase 2 too: the growing model holds
    # them until the stage ends), for phase2.blend.
    trained = phase2.trained_modules(model, captioner, image_head)
    before = phase2.weights_of(trained) if cfg.blend < 1.0 else None
    last = phase2.train_phase2(model, items, table, p.cfg.retrieval, p.log, runner=p.runner, resume=resume, **heads)
    if before is not None:
        phase2.blend_weights(trained, before, cfg.blend)
    if p.main:
        _save_phase2(p, model, captioner, image_head)
    p.acc.wait_for_everyone()
    return {"last": last, "terms": sorted(last)}


def _save_phase2(p: Pipeline, model, captioner, image_head) -> None:
    """The tuned Q-Former and adapters into the growing model (the frozen parts stay as they were)."""
    add_heads(
        p.model_dir,
        p.model_dir,
        qformer=model.qformer,
        captioner=captioner,
        image_heads={"text2image": image_head} if image_head is not None else None,
        training={"phase2": to_dict(p.cfg.phase2)},
    )


def _finish(p: Pipeline) -> None:
    """The grown model, with the config, the summary and the logs, takes ``out``'s place."""
    with extended_checkpoint(p.model_dir, p.model_dir, replaced=set(), logs=p.work / LOGS_FOLDER) as (tmp, meta):
        meta.setdefault("training", {})["pipeline"] = {"config": to_dict(p.cfg), "summary": p.summary, "stages": p.done}
        atomic_write_json(tmp / "training_config.json", to_dict(p.cfg))
    with atomic_directory(p.out) as tmp:
        os.rmdir(tmp)
        os.rename(p.model_dir, tmp)
    shutil.rmtree(p.work, ignore_errors=True)


def check_output(out: Path) -> None:
    """``out`` may be replaced only when it is absent or a model folder."""
    if out.exists() and not (out / CONFIG_FILE).is_file():
        raise UniFashionError(f"{out}: exists and is not a checkpoint folder; refusing to replace it")


# ---------------------------------------------------------------------------
# the per-part commands: stage selections of the same pipeline


def retrieval_part(
    data: str | os.PathLike,
    cfg: RetrievalTrainingConfig,
    *,
    preset: str = "mini",
    fmt: str | None = None,
    split: str = "train",
    progress: bool = True,
) -> PipelineConfig:
    """``unifashion train retrieval``: phase 1a, then phase 2 with L_cir alone (Eq. 10: no heads yet)."""
    run = RunConfig(
        data=os.fspath(data),
        format=fmt,
        split=split,
        preset=preset,
        seed=cfg.seed,
        progress=progress,
        stages=("phase1a", "phase2"),
    )
    return PipelineConfig(
        run=run,
        retrieval=cfg,
        with_captioning=False,
        generation=GenerationTrainingConfig(tasks=()),
        phase2=Phase2Config(with_heads=False),
    )


def captioning_part(
    model: str | os.PathLike,
    data: str | os.PathLike,
    cfg: CaptionTrainingConfig,
    *,
    fmt: str | None = None,
    split: str = "train",
    progress: bool = True,
) -> PipelineConfig:
    """``unifashion train captioning``: phase 1b of the caption head on the checkpoint ``model``."""
    run = RunConfig(
        data=os.fspath(data),
        format=fmt,
        split=split,
        seed=cfg.seed,
        progress=progress,
        init_from=os.fspath(model),
        stages=("phase1b_caption",),
    )
    return PipelineConfig(run=run, captioning=cfg, generation=GenerationTrainingConfig(tasks=()))


def generation_part(
    model: str | os.PathLike,
    data: str | os.PathLike,
    cfg: GenerationTrainingConfig,
    *,
    fmt: str | None = None,
    split: str = "train",
    progress: bool = True,
) -> PipelineConfig:
    """``unifashion train generation``: phase 1b of the image heads of ``cfg.tasks`` on the checkpoint
    ``model``; its ``vae/`` is kept when it has one and ``cfg.reuse_vae`` (else the VAE trains first)."""
    keep_vae = cfg.reuse_vae and (Path(model) / VAE_FOLDER).is_dir()
    if cfg.continue_heads and not keep_vae:
        raise ConfigError(
            f"continue_heads: the heads of {model} were trained on its {VAE_FOLDER}/, so they continue only with "
            "that VAE (it has none, or reuse_vae is off)"
        )
    stages = (*(() if keep_vae else ("phase1b_vae",)), *(f"phase1b_{t}" for t in cfg.tasks))
    run = RunConfig(
        data=os.fspath(data),
        format=fmt,
        split=split,
        seed=cfg.seed,
        progress=progress,
        init_from=os.fspath(model),
        stages=stages,
    )
    return PipelineConfig(run=run, with_captioning=False, generation=cfg)
