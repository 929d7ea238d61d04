"""``unifashion train``: every phase from a config file, or one part (``retrieval``, ``captioning``,
``generation``), which is a selection of the same pipeline's stages."""

from __future__ import annotations

import argparse
import json

from unifashion.cli.args import styles_arg, tasks_arg
from unifashion.config import PRESETS


def cmd_train_pipeline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unifashion.training.pipeline import load_pipeline_config, train_pipeline
    from unifashion.utils.errors import ConfigError

    if not args.config or not args.pipeline_out:
        raise ConfigError("train: give --config CONFIG and --out MODEL, or a COMMAND (see unifashion train --help)")
    cfg = load_pipeline_config(args.config, args.set)
    summary = train_pipeline(cfg, Path(args.pipeline_out), resume=args.resume)
    print(json.dumps({"out": args.pipeline_out, "stages": summary}, indent=2, default=str))
    return 0


def _run(cfg, out: str) -> int:
    from pathlib import Path

    from unifashion.training.pipeline import train_pipeline

    summary = train_pipeline(cfg, Path(out))
    print(json.dumps(summary, indent=2, default=str))
    print(f"model -> {out}")
    return 0


def cmd_train_retrieval(args: argparse.Namespace) -> int:
    from unifashion.config import RetrievalTrainingConfig
    from unifashion.training.pipeline import retrieval_part

    cfg = RetrievalTrainingConfig(
        phase1_epochs=args.phase1_epochs,
        phase2_epochs=args.phase2_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        category_batches=args.category_batches,
        seed=args.seed,
        bf16=not args.no_bf16,
    )
    return _run(retrieval_part(args.data, cfg, preset=args.preset, fmt=args.format, split=args.split), args.out)


def cmd_train_captioning(args: argparse.Namespace) -> int:
    from unifashion.config import CaptionTrainingConfig
    from unifashion.training.pipeline import captioning_part

    cfg = CaptionTrainingConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        bf16=not args.no_bf16,
        styles=styles_arg(args.styles),
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
    )
    return _run(captioning_part(args.model, args.data, cfg, fmt=args.format, split=args.split), args.out)


def cmd_train_generation(args: argparse.Namespace) -> int:
    from unifashion.config import GenerationTrainingConfig
    from unifashion.training.pipeline import generation_part

    cfg = GenerationTrainingConfig(
        tasks=tasks_arg(args.tasks),
        vae_steps=args.vae_steps,
        reuse_vae=not args.retrain_vae,
        steps=args.steps,
        tryon_steps=args.tryon_steps,
        design_steps=args.design_steps,
        tryon_cloth_latent=args.tryon_cloth_latent,
        tryon_cloth_beside=args.tryon_cloth_beside,
        inpaint_init=args.inpaint_init,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        bf16=not args.no_bf16,
        ema_decay=args.ema_decay,
        noisy_share=args.noisy_share,
        noise_offset=args.noise_offset,
        min_snr_gamma=args.min_snr_gamma,
        continue_heads=args.continue_heads,
    )
    return _run(generation_part(args.model, args.data, cfg, fmt=args.format, split=args.split), args.out)


def register(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a model: every phase from a config file (--config), or one part (COMMAND)",
        description="With --config: phase 1a, phase 1b (caption head, VAE, image heads) and phase 2, "
        "resumable (--resume); runs under torchrun / accelerate launch as it is. Or one part with COMMAND.",
    )
    train.add_argument("--config", default=None, help="TOML or YAML file of the run (see configs/)")
    train.add_argument("--out", dest="pipeline_out", default=None, help="model folder to write (with --config)")
    train.add_argument("--resume", action="store_true", help="continue the run of --out from its last checkpoint")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (TOML syntax), e.g. --set retrieval.phase1_epochs=0.5",
    )
    train.set_defaults(func=cmd_train_pipeline)
    tsub = train.add_subparsers(dest="train_command", metavar="COMMAND", required=False)
    _add_retrieval(tsub)
    _add_captioning(tsub)
    _add_generation(tsub)


def _data_arguments(p, *, out_help: str, data_help: str | None = None) -> None:
    """Where a part's training reads (``--data``, ``--format``, ``--split``) and writes (``--out``)."""
    from unifashion.data.formats import FORMATS

    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--format", default=None, choices=FORMATS)
    p.add_argument("--split", default="train")


def _add_retrieval(tsub) -> None:
    from unifashion.config import RetrievalTrainingConfig

    p = tsub.add_parser("retrieval", help="phase 1a (ITC + ITM) then phase 2 (L_cir) of the Q-Former")
    _data_arguments(p, data_help="dataset folder (any supported format)", out_help="checkpoint folder to write")
    p.add_argument("--preset", default="mini", choices=PRESETS)
    defaults = RetrievalTrainingConfig()
    p.add_argument("--phase1-epochs", type=float, default=defaults.phase1_epochs, help="ITC + ITM epochs (0: skip)")
    p.add_argument("--phase2-epochs", type=float, default=defaults.phase2_epochs, help="L_cir epochs (0: skip)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument(
        "--category-batches",
        type=float,
        default=defaults.category_batches,
        help="phase 1a: share of the items batched by category (same-category negatives)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--no-bf16", action="store_true", help="train in fp32 even where bf16 autocast is available")
    p.set_defaults(func=cmd_train_retrieval)


def _add_captioning(tsub) -> None:
    from unifashion.config import CaptionTrainingConfig

    cdef = CaptionTrainingConfig()
    p = tsub.add_parser("captioning", help="phase 1b of the caption head: adapter + LoRA on ITG, Q-Former frozen")
    p.add_argument("--model", required=True, help="a retrieval checkpoint (unifashion train retrieval)")
    _data_arguments(p, out_help="checkpoint to write (the retrieval weights + captioner/)")
    p.add_argument("--epochs", type=float, default=cdef.epochs)
    p.add_argument("--batch-size", type=int, default=cdef.batch_size)
    p.add_argument("--lr", type=float, default=cdef.lr)
    p.add_argument("--lora-rank", type=int, default=None, help="default: the preset's")
    p.add_argument("--lora-alpha", type=int, default=None, help="default: twice the rank")
    p.add_argument("--styles", default=",".join(cdef.styles), help="caption styles to train, comma-separated")
    p.add_argument("--seed", type=int, default=cdef.seed)
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_train_captioning)


def _add_generation(tsub) -> None:
    from unifashion.config import GenerationTrainingConfig

    d = GenerationTrainingConfig()
    p = tsub.add_parser("generation", help="phase 1b of the image head: VAE, then U-Nets on q2I, Q-Former frozen")
    p.add_argument("--model", required=True, help="a retrieval checkpoint (or one with other heads)")
    _data_arguments(p, out_help="checkpoint to write (the model + vae/ + the heads)")
    p.add_argument("--tasks", default=",".join(d.tasks), help="heads to train: text2image,tryon,design")
    p.add_argument("--vae-steps", type=int, default=d.vae_steps)
    p.add_argument("--retrain-vae", action="store_true", help="train a new VAE even if the checkpoint has one")
    p.add_argument("--steps", type=int, default=d.steps, help="text2image U-Net steps")
    p.add_argument("--tryon-steps", type=int, default=d.tryon_steps)
    p.add_argument("--design-steps", type=int, default=d.design_steps)
    p.add_argument(
        "--tryon-cloth-latent",
        action=argparse.BooleanOptionalAction,
        default=d.tryon_cloth_latent,
        help="the try-on U-Net also reads the cloth image's latent as a spatial input",
    )
    p.add_argument(
        "--tryon-cloth-beside",
        action=argparse.BooleanOptionalAction,
        default=d.tryon_cloth_beside,
        help="the try-on U-Net sees the cloth's latent beside the person's, side by side (CatVTON)",
    )
    p.add_argument(
        "--inpaint-init",
        choices=("fresh", "text2image"),
        default=d.inpaint_init,
        help="start the try-on and design U-Nets from fresh weights or from the checkpoint's text2image head",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay, help="0: keep the last weights")
    p.add_argument(
        "--noisy-share",
        type=float,
        default=d.noisy_share,
        help="share of rows with t from the noisiest fifth of the schedule",
    )
    p.add_argument(
        "--noise-offset",
        type=float,
        default=d.noise_offset,
        help="std of the per-channel constant added to the training noise (offset noise)",
    )
    p.add_argument(
        "--min-snr-gamma",
        type=float,
        default=d.min_snr_gamma,
        help="Min-SNR-gamma loss weighting of the U-Net steps (0: off)",
    )
    p.add_argument(
        "--continue",
        dest="continue_heads",
        action="store_true",
        help="start each head from the checkpoint's head of that task instead of fresh weights",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-bf16", action="store_true")
    p.set_defaults(func=cmd_train_generation)
