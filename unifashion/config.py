"""Presets and typed configs: one place for every size and knob.

Three presets share one code path:

- ``tiny``: random small modules, for unit tests (seconds).
- ``mini``: EfficientNet-Lite0 + MiniLM-initialised Q-Former + SmolLM2-135M +
  a small latent diffusion model; offline on a laptop CPU (the default).
- ``paper``: BLIP-2 ViT-g + Q-Former, a LLaVA-class LLM and SD v1.4; GPUs,
  weights from local folders or a hub the user can reach.

Configs are frozen dataclasses. ``to_dict``/``from_dict`` round-trip them
through ``config.json``; ``from_dict`` names the field and the expected type
when a value is wrong.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from unifashion.utils.errors import ConfigError

# Table 4's caption-assisted composed retrieval: w in sim(e_cls, Z_T) + w * sim(e_cls, Z_C), the default of
# `eval retrieval` and of a catalog with captions. Chosen on FashionSynth's `test` split (not on `val` or
# `novel`, where it is reported): 0.25 -> 98.14, 0 -> 98.11, 1 -> 97.87 (README, captioning section).
CAPTION_WEIGHT = 0.25

PRESETS = ("tiny", "mini", "paper")

VisionKind = Literal["tiny_cnn", "efficientnet_lite0", "blip2_vit"]
LLMKind = Literal["tiny_llama", "smollm2", "causal_lm"]
ResizeMode = Literal["crop", "pad", "targetpad"]


@dataclass(frozen=True)
class VisionConfig:
    """The frozen image encoder that feeds the Q-Former's cross-attention."""

    kind: VisionKind = "efficientnet_lite0"
    image_size: int = 224
    # "pad" keeps the whole garment of a tall product photo; "crop" is the
    # ImageNet habit (shorter side to image_size, then centre crop).
    resize_mode: ResizeMode = "pad"
    pad_value: int = 255
    # "targetpad" only (CLIP4Cir's preprocessing, which SPRC and the official UniFashion code use): an
    # image longer than ``target_ratio`` : 1 is padded with black to that ratio, then cropped as "crop".
    target_ratio: float = 1.25
    feature_dim: int = 1600  # C of the patch features (B, N, C)
    # efficientnet_lite0 only: which 7x7 map feeds the Q-Former: "head" (1280-d,
    # after the 1x1 head convolution), "blocks" (320-d, the last block, before
    # it), or "both" (1600-d, concatenated). The last block keeps the garment
    # details that the ImageNet head discards: on FashionSynth, cross-modal
    # R@1 after 150 steps rises from 70/69 (head) to 80/76 (blocks) and 81/78
    # (both); see the retrieval section of README.
    feature_layer: str = "both"
    # bf16 autocast on CPUs with native bf16 (features agree with fp32 to a
    # cosine of > 0.99; see tests/integration/test_backbones.py).
    autocast_bf16: bool = True
    # blip2_vit only: hub id or local folder of a BLIP-2 checkpoint.
    source: str | None = None
    # tiny_cnn only: width of the random CNN and the seed of its weights.
    tiny_width: int = 32
    seed: int = 0


@dataclass(frozen=True)
class QFormerConfig:
    """BERT-like Q-Former with learnable queries (paper Eq. 2 and 9)."""

    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    num_query_tokens: int = 32
    cross_attention_frequency: int = 2  # BLIP-2's: cross-attention every other layer
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    max_text_length: int = 64
    # Size of the shared retrieval embedding (ITC projections).
    embed_dim: int = 256
    # How a text (or a composed query) becomes one vector: "cls" is the paper's
    # e_cls (the [CLS] output, Eq. 3 and 9); "mean" averages the non-padding
    # token outputs (better on FashionSynth with the MiniLM initialisation,
    # whose sentence embedding is a mean; see the retrieval notes in README).
    text_pooling: Literal["cls", "mean"] = "mean"
    # Dropout of hidden states and attention probabilities while training (BERT's 0.1).
    dropout: float = 0.1
    # "minilm": initialise from all-MiniLM-L6-v2 (mini); "random": fresh
    # weights (tiny); "blip2": load from the BLIP-2 checkpoint in ``source``.
    init: Literal["minilm", "random", "blip2"] = "minilm"
    source: str | None = None


@dataclass(frozen=True)
class LLMConfig:
    """The caption head: a causal LM prompted with the adapted queries."""

    kind: LLMKind = "smollm2"
    # causal_lm only: hub id or local folder (safetensors).
    source: str | None = None
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # Precision the frozen LLM is loaded in: "auto" is bfloat16 on a CUDA GPU (a 7B model in
    # 14 GB instead of 27) and float32 on the CPU; the LoRA weights and the adapter stay float32.
    load_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    # Caption length of every command and of ``UniFashion.caption`` unless they are given another.
    max_new_tokens: int = 60
    # tiny_llama only: the random model's size.
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4


@dataclass(frozen=True)
class DiffusionConfig:
    """The image head: a latent-diffusion U-Net and its VAE."""

    # Trained here for tiny/mini; loaded from ``source`` (a Stable Diffusion
    # or Paint-by-Example folder with unet/ and vae/) for paper.
    source: str | None = None
    # A different folder (or hub id) for the VAE than for the U-Net (the paper's try-on
    # uses StableVITON's VITON-HD VAE); None: the VAE of ``source``.
    vae_source: str | None = None
    image_size: int = 64  # pixels the VAE encodes
    latent_channels: int = 4
    vae_block_channels: tuple[int, ...] = (32, 64, 64)
    unet_block_channels: tuple[int, ...] = (64, 128, 192)
    unet_layers_per_block: int = 1
    cross_attention_dim: int = 256
    attention_head_dim: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # How a pretrained inpainting U-Net of ``source`` reads the channels after the noisy latent.
    # "concat" (ours): agnostic latent, mask (1 = paint), then pose / sketch / cloth latent;
    # "paint_by_example": masked latent, mask with 1 = keep (Paint-by-Example inverts it), then ours;
    # "sd_inpainting": mask (1 = paint), masked latent, then ours; "stableviton": masked latent,
    # mask with 1 = keep, StableVITON's DensePose latent (zeros here: we have no DensePose), then
    # ours. "auto": from the source's model_index.json (PaintByExamplePipeline,
    # StableDiffusionInpaintPipeline, StableVITON); "concat" for a plain 4-channel U-Net. Extra
    # channels beyond the pretrained ones start at zero either way.
    input_layout: Literal["auto", "concat", "paint_by_example", "sd_inpainting", "stableviton"] = "auto"
    # The first and last beta of the "linear" and "scaled_linear" schedules (diffusers' defaults;
    # Stable Diffusion: 0.00085 / 0.012). A pretrained ``source``'s scheduler_config.json must agree.
    beta_start: float = 0.0001
    beta_end: float = 0.02
    # What the U-Net predicts: the noise ("epsilon", as Stable Diffusion 1.x) or
    # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 ("v_prediction", as SD 2.x).
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    # Betas rescaled so that the last training step is (all but) pure noise (Lin et al., 2024):
    # the starting noise of sampling then is what training saw there. Needs v_prediction.
    zero_terminal_snr: bool = False
    condition_dropout: float = 0.1  # for classifier-free guidance (App. B)
    guidance_scale: float = 3.0
    sampler: Literal["plms", "ddim", "dpm++"] = "dpm++"
    sampling_steps: int = 20
    # Where the sampling steps sit: "leading" (Stable Diffusion's) or "trailing".
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"
    # > 0: DDIM clips, DPM-Solver++ thresholds, the predicted x_0 at this
    # absolute value (latents are scaled to unit variance); 0: off.
    clip_range: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a UniFashion model of one preset."""

    preset: str = "mini"
    vision: VisionConfig = field(default_factory=VisionConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "config") -> ModelConfig:
        return from_dict(cls, data, where=where)


@dataclass(frozen=True)
class RetrievalTrainingConfig:
    """Phase 1a (ITC + ITM on image-caption pairs) and phase 2 (L_cir on triplets)."""

    # Defaults = the quickstart's ``full`` run (8,000 FashionSynth products):
    # about 35 minutes on 2 CPU cores for both phases.
    phase1_epochs: float = 6.0
    phase2_epochs: float = 3.0
    batch_size: int = 64
    # 3e-4 beat 1e-4, 6e-4 and 1e-3 on FashionSynth (150-step sweep, README).
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_ratio: float = 0.05
    seed: int = 0
    bf16: bool = True  # autocast on CPUs with native bf16
    itm_weight: float = 1.0
    # Phase 1a: share of the items batched by category (hard in-batch negatives
    # of the same category); the rest are batched at random. On FashionSynth,
    # random-100 R@1 (i2t/t2i) after 150 phase-1a steps: 81/78 at 0, 82/79 at
    # 0.5, 84/85 at 1; but at 1 longer training degrades (53/63 after 444
    # phase-1a steps; 82/73 after both phases), so it stays off by default.
    category_batches: float = 0.0
    # ITM (Eq. 4) runs on this many of the batch's positive pairs (plus two hard
    # negatives each): it costs 3 Q-Former passes per pair, more than ITC itself.
    itm_pairs: int = 16
    # Eq. 10 weights: ITC(e_cls, Z_T), ITC(e_cls, Z_C), ITM(t, Z_T).
    cir_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    # Phase 2 also keeps ITC(target caption, target image) of phase 1a (not in
    # Eq. 10; 0 turns it off) so that composed training does not erode
    # cross-modal retrieval of the same Q-Former. FashionSynth full, val:
    # weight 1 -> random-100 R@1 84.8 / 81.1, weight 3 -> 87.6 / 85.6, with
    # composed retrieval 97.6 and 97.9 (README, retrieval section).
    phase2_pair_itc_weight: float = 3.0
    # Phase 2's peak rate; None: ``lr``. 1e-4 measured against 3e-4 from one phase-1 model: 1.5-2.5
    # points less composed recall, the same cross-modal recall (README, "Where phase 2 lands").
    phase2_lr: float | None = None
    log_every: int = 10
    # AdamW's betas and eps, and the rate after the warm-up: "cosine" decay to zero or "constant"
    # (the paper: betas 0.9 / 0.99, cosine for the Q-Former and LLM, constant for the U-Nets).
    adam_betas: tuple[float, ...] = (0.9, 0.98)
    adam_eps: float = 1e-6
    lr_schedule: Literal["cosine", "constant"] = "cosine"


@dataclass(frozen=True)
class CaptionTrainingConfig:
    """Phase 1b of the caption head: ``text_adapter`` + LoRA on ITG (Eq. 6), Q-Former frozen."""

    # Defaults = the quickstart's ``full`` run (about 4,800 training products:
    # 600 steps, about 24 minutes on 2 CPU cores). Small batches: on CPU the
    # cost is per token, and more updates teach the adapter faster.
    epochs: float = 1.0
    batch_size: int = 8
    # The adapter starts from scratch and the LLM is small: a far higher rate
    # than the paper's 2e-5 for LLaVA (see the captioning section of README).
    lr: float = 1e-3
    weight_decay: float = 0.0  # paper App. D
    warmup_ratio: float = 0.03  # paper App. D
    seed: int = 0
    bf16: bool = True
    # Recompute activations in the backward pass instead of storing them (less memory, more
    # compute; the same gradients): the LLM's layers here
    gradient_checkpointing: bool = False
    # Under several processes, shard the LLM (its decoder layers one by one), LoRA and AdamW's
    # moments over them (FSDP) instead of a whole copy on each: for a 7B LLM on cards under 40 GB.
    # The same trajectory as plain data parallel; no effect on one process.
    fsdp: bool = False
    # Caption styles trained, each item drawing one of its product's styles at random.
    styles: tuple[str, ...] = ("title", "description", "attributes")
    log_every: int = 10
    # Another LoRA size than the preset's (``LLMConfig``); alpha follows the rank at 2x unless given.
    lora_rank: int | None = None
    lora_alpha: int | None = None
    # Start the LoRA from a converted one (``unifashion convert llava-lora``: the official release's
    # LLaVA LoRA) instead of zero; its rank, alpha and target modules must be the LLM's.
    lora_init: str | None = None
    # AdamW's betas and eps, and the rate after the warm-up: "cosine" decay to zero or "constant"
    # (the paper: betas 0.9 / 0.99, cosine for the Q-Former and LLM, constant for the U-Nets).
    adam_betas: tuple[float, ...] = (0.9, 0.98)
    adam_eps: float = 1e-6
    lr_schedule: Literal["cosine", "constant"] = "cosine"


@dataclass(frozen=True)
class GenerationTrainingConfig:
    """Phase 1b of the image head: the VAE, then one U-Net per task on q2I (Eq. 7), Q-Former frozen."""

    # Defaults = the quickstart's ``full`` run (8,000 FashionSynth products,
    # 64 px images, 16 x 16 latents; timings in the generation section of README).
    tasks: tuple[str, ...] = ("text2image", "tryon", "design")
    vae_steps: int = 2500
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    # Random square crops of this size (0: whole images): the VAE is fully
    # convolutional, and colour and edges are local, so crops teach it the
    # same at a quarter of the cost of 64 px images.
    vae_crop: int = 32
    # Weight of the KL term per latent value against the L1 term per pixel;
    # small, as in Stable Diffusion's VAE: the latents stay close to a
    # deterministic code, their scale is fixed afterwards.
    vae_kl_weight: float = 1e-4
    reuse_vae: bool = True  # keep the checkpoint's vae/ when it has one
    # Start each head from the checkpoint's head of the same task (fine-tuning)
    # instead of fresh weights; needs the checkpoint's VAE (no VAE retraining).
    continue_heads: bool = False
    steps: int = 2500  # text2image U-Net
    tryon_steps: int = 500
    design_steps: int = 500
    # The try-on U-Net also reads the cloth image's VAE latent beside the person (CatVTON's
    # concatenation; the Q-Former's cloth queries stay the condition): ``benchmarks/head_levers.py``.
    tryon_cloth_latent: bool = False
    # The cloth's latent beside the person's instead (CatVTON's spatial concatenation): the U-Net
    # sees [person | cloth] side by side, twice as wide, and its self-attention can copy the
    # garment's colours and pattern from the cloth half; only the person half is predicted.
    tryon_cloth_beside: bool = False
    # Where the try-on and design U-Nets start: "fresh" weights, or the checkpoint's text2image
    # head ("text2image": its U-Net with zero weights for the extra input channels, its adapter and
    # null condition; Paint-by-Example and MGD start from Stable Diffusion the same way). Without a
    # text2image head in the checkpoint they start fresh (the stage summary says which).
    inpaint_init: Literal["fresh", "text2image"] = "fresh"
    batch_size: int = 32
    lr: float = 4e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    # Shares of text-only / image-only / composed conditions in text2image batches.
    condition_mix: tuple[float, ...] = (0.5, 0.25, 0.25)
    # Share of rows whose noise level is drawn from the noisiest fifth of the
    # schedule (where the model must read the condition); 0: uniform (DDPM).
    noisy_share: float = 0.3
    # Std of the per-channel constant added to the training noise (offset noise, see
    # ``Generator.q2i_loss``); 0: plain Gaussian noise. Without it the garment's
    # colour followed the mean of the starting noise more than the text (README).
    noise_offset: float = 0.1
    # Min-SNR-gamma loss weighting (``Generator.q2i_loss``); 0: every step weighs the same.
    min_snr_gamma: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    bf16: bool = True
    # Recompute activations in the backward pass instead of storing them (less memory, more
    # compute; the same gradients): the U-Net's blocks here
    gradient_checkpointing: bool = False
    log_every: int = 25
    # AdamW's betas and eps, and the rate after the warm-up: "cosine" decay to zero or "constant"
    # (the paper: betas 0.9 / 0.99, cosine for the Q-Former and LLM, constant for the U-Nets).
    adam_betas: tuple[float, ...] = (0.9, 0.98)
    adam_eps: float = 1e-6
    lr_schedule: Literal["cosine", "constant"] = "cosine"


def tiny() -> ModelConfig:
    return ModelConfig(
        preset="tiny",
        vision=VisionConfig(kind="tiny_cnn", image_size=64, feature_dim=32, tiny_width=32),
        qformer=QFormerConfig(
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            intermediate_size=128,
            num_query_tokens=8,
            max_position_embeddings=128,
            max_text_length=32,
            embed_dim=32,
            init="random",
        ),
        llm=LLMConfig(kind="tiny_llama", lora_rank=4, lora_alpha=8, max_new_tokens=16),
        diffusion=DiffusionConfig(
            image_size=32,
            vae_block_channels=(16, 32),
            unet_block_channels=(32, 64),
            cross_attention_dim=64,
            attention_head_dim=16,
            sampling_steps=5,
        ),
    )


def mini() -> ModelConfig:
    return ModelConfig(preset="mini")


def paper() -> ModelConfig:
    """Sizes of the paper (Appendix D); weights come from user-given sources."""
    return ModelConfig(
        preset="paper",
        vision=VisionConfig(
            kind="blip2_vit",
            image_size=224,
            resize_mode="targetpad",  # the official code's preprocessing (target ratio 1.25)
            feature_dim=1408,
            source="Salesforce/blip2-itm-vit-g",
        ),
        qformer=QFormerConfig(
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            intermediate_size=3072,
            num_query_tokens=32,
            cross_attention_frequency=2,
            vocab_size=30523,  # BERT-base uncased + "[DEC]", as BLIP-2's config.json
            max_text_length=64,
            embed_dim=256,
            init="blip2",
            source="Salesforce/blip2-itm-vit-g",
            text_pooling="cls",
        ),
        llm=LLMConfig(
            kind="causal_lm",
            source="llava-hf/llava-1.5-7b-hf",  # LLaVA-1.5 (paper App. D); its language model is read
            lora_rank=128,
            lora_alpha=256,
            max_new_tokens=60,
        ),
        diffusion=DiffusionConfig(
            source="CompVis/stable-diffusion-v1-4",
            image_size=512,
            cross_attention_dim=768,
            beta_schedule="scaled_linear",  # Stable Diffusion v1's scheduler_config.json
            beta_start=0.00085,
            beta_end=0.012,
            guidance_scale=7.5,
            sampler="plms",
            sampling_steps=50,
        ),
    )


_PRESET_FACTORIES = {"tiny": tiny, "mini": mini, "paper": paper}


def get_preset(name: str) -> ModelConfig:
    """The config of preset ``name`` (one of :data:`PRESETS`)."""
    try:
        return _PRESET_FACTORIES[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}") from None


# ---------------------------------------------------------------------------
# dict <-> dataclass, with errors that name the field


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type, data: Any, *, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown or mistyped fields raise
    :class:`ConfigError` naming ``where.field`` and the expected type. Fields
    absent from ``data`` keep their defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        item_type = args[0] if args else Any
        return tuple(_coerce(item_type, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp!r}")
