"""Pickle checkpoints -> safetensors folders, without running code.

Checkpoints of other projects often come as pickles (``pytorch_model.bin``,
``*.pth``, ``*.ckpt``). Unpickling can run any code the file asks for, so the
loaders of this package read safetensors only. This module is the one place a
pickle is opened, and it opens it with ``torch.load(weights_only=True)``:
tensors, containers and numbers come back; a file that needs anything else (a
class, a function, a ``__reduce__`` payload) is refused before that code runs.

What is converted:

* a folder (a transformers or diffusers checkpoint, subfolders included): every
  pickle weight file becomes its safetensors namesake (``pytorch_model.bin`` ->
  ``model.safetensors``, ``diffusion_pytorch_model.bin`` ->
  ``diffusion_pytorch_model.safetensors``, shards and their index renamed
  alike); every other file is copied as it is;
* a single file: its state dict (found under ``state_dict``, ``model``,
  ``module`` or whichever single entry holds the tensors, as in
  ``{"epoch": 3, "Blip2QformerCirCls": {...}}``) becomes ``model.safetensors``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch

from unifashion.backbones.hub import PICKLE_SUFFIXES, read_json
from unifashion.utils.errors import UniFashionError
from unifashion.utils.io import atomic_directory

# safetensors metadata transformers and diffusers expect of a PyTorch checkpoint.
SAFETENSORS_METADATA = {"format": "pt"}


class ConvertError(UniFashionError, ValueError):
    """A checkpoint cannot be converted; the message names the file and why."""


def read_pickle(path: str | os.PathLike) -> object:
    """The object stored in pickle checkpoint ``path``, read with ``weights_only=True``."""
    path = Path(path)
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(
            f"{path}: refused: the file asks for more than tensors to be rebuilt (code, classes or "
            f"functions), and it is only ever read as data ({reason})"
        ) from None
    except FileNotFoundError:
        raise ConvertError(f"{path}: no such file") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ConvertError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def _is_state(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def state_dict_of(obj: object, *, where: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: the object itself when it maps names to tensors,
    else the entry ``key``, else its one entry that does (``state_dict``, ``model``, ...)."""
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            have = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise ConvertError(f"{where}: no entry {key!r} (it has {have})")
        obj = obj[key]
        if not _is_state(obj):
            raise ConvertError(f"{where}: entry {key!r} is not a mapping of names to tensors")
        return dict(obj)
    if _is_state(obj):
        return dict(obj)
    if not isinstance(obj, dict):
        raise ConvertError(f"{where}: expected a mapping of names to tensors, got {type(obj).__name__}")
    candidates = [k for k, v in obj.items() if _is_state(v)]
    if len(candidates) == 1:
        return dict(obj[candidates[0]])
    if not candidates:
        raise ConvertError(f"{where}: no entry maps names to tensors (entries: {sorted(map(str, obj))})")
    raise ConvertError(f"{where}: several entries hold tensors ({sorted(candidates)}); name one with --key")


def read_state(path: str | os.PathLike, key: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict of pickle checkpoint ``path`` (see :func:`state_dict_of`)."""
    return state_dict_of(read_pickle(path), where=str(path), key=key)


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with its own storage (safetensors refuses tied weights)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, tensor in state.items():
        t = tensor.detach().contiguous()
        ident = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if ident in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
        out[name] = t
    return out


def save_state(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    save_file(_unshared(state), os.fspath(path), metadata=SAFETENSORS_METADATA)


def safetensors_name(name: str) -> str:
    """The safetensors namesake of pickle weight file ``name`` (index files too)."""
    if name.endswith(".index.json"):
        return safetensors_name(name[: -len(".index.json")]) + ".index.json"
    stem, suffix = os.path.splitext(name)
    if suffix not in PICKLE_SUFFIXES:
        raise ConvertError(f"{name}: not a pickle weight file (expected one of {', '.join(PICKLE_SUFFIXES)})")
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model") :]
    return stem + ".safetensors"


def _is_pickle_index(name: str) -> bool:
    return name.endswith(".index.json") and os.path.splitext(name[: -len(".index.json")])[1] in PICKLE_SUFFIXES


def _convert_tree(src: Path, dest: Path, report: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _convert_tree(entry, dest / entry.name, report)
        elif entry.suffix in PICKLE_SUFFIXES:
            if (entry.parent / safetensors_name(entry.name)).exists():
                report["skipped"].append(str(entry))  # the safetensors twin is copied instead
                continue
            state = read_state(entry)
            save_state(state, dest / safetensors_name(entry.name))
            report["converted"].append({"file": str(entry), "tensors": len(state)})
        elif _is_pickle_index(entry.name):
            index = json.loads(entry.read_text(encoding="utf-8"))
            if not isinstance(index.get("weight_map"), dict):
                raise ConvertError(f"{entry}: expected a shard index with a 'weight_map' object")
            index["weight_map"] = {k: safetensors_name(v) for k, v in index["weight_map"].items()}
            (dest / safetensors_name(entry.name)).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        else:
            shutil.copy2(entry, dest / entry.name)


def convert_weights(src: str | os.PathLike, out: str | os.PathLike, *, key: str | None = None) -> dict:
    """Convert folder or file ``src`` into safetensors folder ``out`` (written atomically).
    Returns what was done: ``{"converted": [{"file", "tensors"}], "skipped": [...]}``."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise ConvertError(f"{src}: no such file or folder")
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
        raise ConvertError(f"{out}: the output must lie outside {src}")
    report: dict = {"source": str(src), "converted": [], "skipped": []}
    with atomic_directory(out) as tmp:
        if src.is_dir():
            _convert_tree(src, tmp, report)
        else:
            state = read_state(src, key)
            save_state(state, tmp / "model.safetensors")
            report["converted"].append({"file": str(src), "tensors": len(state)})
    if not report["converted"]:
        report["note"] = "no pickle weight file needed converting: the folder was copied as it is"
    return report


# ---------------------------------------------------------------------------
# LAVIS BLIP-2 (blip2_pretrained.pth, the feature extractor, and checkpoints built on
# LAVIS's Blip2Qformer such as the composed-retrieval ones) -> a transformers
# Blip2ForImageTextRetrieval folder, the layout ``paper``'s vision and Q-Former load.

# Whole-name renames; per-layer names are handled by :func:`lavis_name`.
_LAVIS_NAMES = {
    "query_tokens": "query_tokens",
    "ln_vision.weight": "vision_model.post_layernorm.weight",
    "ln_vision.bias": "vision_model.post_layernorm.bias",
    "visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
    "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
    "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "Qformer.bert.embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "Qformer.bert.embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "Qformer.bert.embeddings.LayerNorm.weight": "qformer.layernorm.weight",
    "Qformer.bert.embeddings.LayerNorm.bias": "qformer.layernorm.bias",
}
_LAVIS_HEADS = {"vision_proj.": "vision_projection.", "text_proj.": "text_projection.", "itm_head.": "itm_head."}
_LAVIS_BLOCK = {
    "norm1.": "layer_norm1.",
    "norm2.": "layer_norm2.",
    "attn.qkv.weight": "self_attn.qkv.weight",
    "attn.proj.": "self_attn.projection.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
}
# Tensors of a LAVIS checkpoint that the retrieval model has no place for, and why.
_LAVIS_UNUSED = {
    "Qformer.cls.": "the Q-Former's own text-generation head (BLIP-2's ITG loss), not part of retrieval",
    "Qformer.bert.embeddings.position_ids": "a constant index buffer, rebuilt on load",
    "temp": "the contrastive temperature (transformers' retrieval model has none; training learns its own)",
    # What the official UniFashion release's Q-Former checkpoints ({"epoch", "Blip2QformerCirCls" or
    # "Blip2QformerCirRerank": state}) hold besides BLIP-2's tensors.
    "query_proj.": "the CIR variants' 256 -> 256 query projection, which their forward never calls",
    "caption_proj.": "the rerank variant's caption projection (a second ITC head for captions; ours is "
    "text_proj, shared)",
    "prompt_tokens": "the rerank variant's learned prompt tokens (ours has no prompt tokens)",
}


def lavis_name(name: str) -> str | None:
    """The transformers name of LAVIS tensor ``name`` (None when it has none). The q/v biases
    of the vision blocks are joined into one qkv bias by :func:`convert_lavis_state`."""
    if name in _LAVIS_NAMES:
        return _LAVIS_NAMES[name]
    for old, new in _LAVIS_HEADS.items():
        if name.startswith(old):
            return new + name[len(old) :]
    if name.startswith("Qformer.bert.encoder.layer."):
        rest = name[len("Qformer.bert.") :]
        rest = rest.replace(".attention.self.", ".attention.attention.")
        rest = rest.replace(".crossattention.self.", ".crossattention.attention.")
        return "qformer." + rest
    if name.startswith("visual_encoder.blocks."):
        index, _, rest = name[len("visual_encoder.blocks.") :].partition(".")
        for old, new in _LAVIS_BLOCK.items():
            if rest.startswith(old):
                return f"vision_model.encoder.layers.{index}.{new}{rest[len(old) :]}"
    return None


def convert_lavis_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(transformers state, {LAVIS name: why it was not mapped})``."""
    out: dict[str, torch.Tensor] = {}
    left: dict[str, str] = {}
    biases: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        if name.startswith("visual_encoder.blocks.") and name.endswith((".attn.q_bias", ".attn.v_bias")):
            block = name.rsplit(".attn.", 1)[0]
            biases.setdefault(block, {})[name.rsplit(".", 1)[1]] = tensor
            continue
        new = lavis_name(name)
        if new is not None:
            out[new] = tensor
            continue
        why = next((w for prefix, w in _LAVIS_UNUSED.items() if name == prefix or name.startswith(prefix)), None)
        left[name] = why or "no counterpart in transformers' Blip2ForImageTextRetrieval"
    for block, pair in biases.items():
        index = block[len("visual_encoder.blocks.") :]
        if set(pair) != {"q_bias", "v_bias"}:
            raise ConvertError(f"{block}.attn: has {sorted(pair)}, expected both q_bias and v_bias")
        q, v = pair["q_bias"], pair["v_bias"]
        # LAVIS's EVA attention adds (q_bias, 0, v_bias) to its qkv projection: keys get no bias.
        out[f"vision_model.encoder.layers.{index}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
    return out, left


def _count_layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    found = {int(k[len(prefix) :].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def blip2_config_for(state: dict[str, torch.Tensor], *, vision_heads: int | None, qformer_heads: int | None) -> dict:
    """A transformers ``Blip2Config`` (as a dict) with every size read from a converted ``state``.
    Head counts cannot be read from tensors: BLIP-2's (ViT-g 16, Q-Former 12) unless given."""

    def shape(name: str) -> tuple[int, ...]:
        if name not in state:
            raise ConvertError(f"the checkpoint has no tensor that maps to {name} (is it a LAVIS BLIP-2 checkpoint?)")
        return tuple(state[name].shape)

    hidden = shape("vision_model.embeddings.class_embedding")[-1]
    patch = shape("vision_model.embeddings.patch_embedding.weight")[-1]
    positions = shape("vision_model.embeddings.position_embedding")[1]
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise ConvertError(f"position embedding of {positions} rows: not a square grid of patches plus one")
    q_hidden = shape("qformer.layernorm.weight")[0]
    layers = _count_layers(state, "qformer.encoder.layer.")
    cross = sorted({int(k.split(".")[3]) for k in state if ".crossattention." in k})
    frequency = cross[1] - cross[0] if len(cross) > 1 else max(1, layers)
    if cross and (cross[0] != 0 or cross != list(range(0, layers, frequency))):
        raise ConvertError(f"cross-attention in Q-Former layers {cross}: not every n-th layer from the first")
    vision_heads = vision_heads or 16
    qformer_heads = qformer_heads or 12
    for what, size, heads in (("vision", hidden, vision_heads), ("Q-Former", q_hidden, qformer_heads)):
        if size % heads:
            raise ConvertError(f"{what} width {size} is not divisible by {heads} heads; give the head count")
    return {
        "model_type": "blip-2",
        "architectures": ["Blip2ForImageTextRetrieval"],
        "num_query_tokens": shape("query_tokens")[1],
        "image_text_hidden_size": shape("vision_projection.weight")[0],
        "vision_config": {
            "hidden_size": hidden,
            "intermediate_size": shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
            "num_hidden_layers": _count_layers(state, "vision_model.encoder.layers."),
            "num_attention_heads": vision_heads,
            "image_size": side * patch,
            "patch_size": patch,
            "qkv_bias": True,
        },
        "qformer_config": {
            "hidden_size": q_hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": qformer_heads,
            "intermediate_size": shape("qformer.encoder.layer.0.intermediate_query.dense.weight")[0],
            "vocab_size": shape("embeddings.word_embeddings.weight")[0],
            "max_position_embeddings": shape("embeddings.position_embeddings.weight")[0],
            "cross_attention_frequency": frequency,
            "encoder_hidden_size": hidden,
            "use_qformer_text_input": True,
        },
    }


def convert_lavis_blip2(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    key: str | None = None,
    vision_heads: int | None = None,
    qformer_heads: int | None = None,
) -> dict:
    """A LAVIS BLIP-2 checkpoint (``{"model": state}`` or any single state dict) -> a
    ``Blip2ForImageTextRetrieval`` folder (config.json + model.safetensors). Every tensor is
    either mapped or listed with the reason it was not; the result is then checked against
    transformers' model: nothing missing, nothing left over."""
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    src = Path(src)
    state, left = convert_lavis_state(read_state(src, key))
    config = blip2_config_for(state, vision_heads=vision_heads, qformer_heads=qformer_heads)
    with torch.device("meta"):
        expected = Blip2ForImageTextRetrieval(Blip2Config(**config)).state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("position_ids"))
    extra = sorted(k for k in state if k not in expected)
    wrong = sorted(k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or extra or wrong:
        raise ConvertError(
            f"{src}: does not fill a Blip2ForImageTextRetrieval: missing {missing[:5]} ({len(missing)}), "
            f"left over {extra[:5]} ({len(extra)}), wrong shape {wrong[:5]} ({len(wrong)})"
        )
    with atomic_directory(out) as tmp:
        save_state(state, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"source": str(src), "tensors": len(state), "not_mapped": left, "config": config}


# ---------------------------------------------------------------------------
# LDM (CompVis) checkpoints -> diffusers folders: the U-Net under ``model.diffusion_model.`` and
# the VAE under ``first_stage_model.`` of a Stable Diffusion / Paint-by-Example / StableVITON
# ``.ckpt``. The renaming is diffusers' own (``diffusers.loaders.single_file_utils``); this wraps
# it with a strict check and a report of every tensor that found no place.

LDM_UNET_PREFIX = "model.diffusion_model."
LDM_VAE_PREFIX = "first_stage_model."


def _read_config(path: str | os.PathLike, what: str) -> dict:
    config = read_json(Path(path))
    if not isinstance(config, dict):
        raise ConvertError(f"{path}: expected a JSON object (a diffusers {what} config)")
    return config


def _storage_ids(tensors) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in tensors}


def _strict(model_cls, config: dict, state: dict[str, torch.Tensor], where: str):
    """``model_cls`` built from ``config`` with ``state`` loaded; any difference is an error."""
    model = model_cls.from_config(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].numel() != expected[k].numel())
    if missing or extra or wrong:
        raise ConvertError(
            f"{where}: does not fill a {model_cls.__name__} of the given config: missing {missing[:5]} "
            f"({len(missing)}), left over {extra[:5]} ({len(extra)}), wrong size {wrong[:5]} ({len(wrong)})"
        )
    model.load_state_dict({k: v.reshape(expected[k].shape) for k, v in state.items()})
    return model


# StableVITON's U-Net (cldm/warping_cldm_network.py) adds zero cross-attention blocks that read its
# ControlNet branch's features of the cloth; a UNet2DConditionModel has no place for them.
STABLEVITON_WARP = ("warp_flow_blks.", "warp_zero_convs.")


def convert_ldm(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    unet_config: str | os.PathLike | None = None,
    vae_config: str | os.PathLike | None = None,
    scheduler_config: str | os.PathLike | None = None,
    pipeline: str | None = None,
    key: str | None = None,
) -> dict:
    """An LDM checkpoint -> a diffusers folder (``unet/``, ``vae/`` when the file has one and
    ``vae_config`` is given, ``scheduler/`` and ``model_index.json`` when asked). The U-Net's input
    channels are read from the checkpoint (9 for Paint-by-Example, 13 for StableVITON's try-on
    U-Net). A file of a VAE alone (``first_stage_model.*`` or an AutoencoderKL's own names, as
    StableVITON's VITON-HD VAE) gives ``vae/`` alone: a ``diffusion.vae_source``.
    Returns ``{"unet": n, "vae": n, "not_mapped": {prefix or name: count}, "notes": [...]}``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    src = Path(src)
    state = read_state(src, key)
    conv_in = state.get(LDM_UNET_PREFIX + "input_blocks.0.0.weight")
    has_vae = any(k.startswith(LDM_VAE_PREFIX) for k in state) or "encoder.conv_in.weight" in state
    if conv_in is None and not has_vae:
        raise ConvertError(
            f"{src}: neither an LDM U-Net ({LDM_UNET_PREFIX}input_blocks.0.0.weight) nor a VAE "
            f"({LDM_VAE_PREFIX}encoder.conv_in.weight or encoder.conv_in.weight)"
        )
    if conv_in is not None and unet_config is None:
        raise ConvertError(f"{src}: holds a U-Net; give its diffusers config (--unet-config)")
    if conv_in is None and vae_config is None:
        raise ConvertError(f"{src}: holds a VAE alone; give its diffusers config (--vae-config)")
    report: dict = {"source": str(src), "notes": []}
    # diffusers' renaming passes the checkpoint's own tensors through (views where it reshapes), so
    # the storages it returns tell which tensors of the file found a place.
    used: set[int] = set()
    unet = None
    if conv_in is not None:
        ucfg = _read_config(unet_config, "U-Net")
        ucfg["in_channels"] = int(conv_in.shape[1])
        unet_state = convert_ldm_unet_checkpoint(state, ucfg)
        used |= _storage_ids(unet_state.values())
        unet = _strict(UNet2DConditionModel, ucfg, unet_state, f"{src} (U-Net)")
        report |= {"unet": len(unet_state), "in_channels": ucfg["in_channels"]}
    vae = None
    if has_vae and vae_config is not None:
        vcfg = _read_config(vae_config, "VAE")
        vae_state = convert_ldm_vae_checkpoint(state, vcfg)
        used |= _storage_ids(vae_state.values())
        vae = _strict(AutoencoderKL, vcfg, vae_state, f"{src} (VAE)")
        report["vae"] = len(vae_state)
    not_mapped: dict[str, list[str]] = {}
    for name, tensor in state.items():
        if tensor.untyped_storage().data_ptr() not in used:
            inner = name[len(LDM_UNET_PREFIX) :]
            if name.startswith(LDM_UNET_PREFIX) and inner.startswith(STABLEVITON_WARP):
                group = LDM_UNET_PREFIX + inner.split(".", 1)[0]
            elif name.startswith(LDM_UNET_PREFIX):
                group = LDM_UNET_PREFIX
            else:
                group = name.split(".", 1)[0]
            not_mapped.setdefault(group, []).append(name)
    if any(f"{g}." == LDM_UNET_PREFIX + w for g in not_mapped for w in STABLEVITON_WARP):
        report["notes"].append(
            "StableVITON's warp attention (warp_flow_blks, warp_zero_convs: zero cross-attention that adds its "
            "ControlNet branch's cloth features to the decoder) has no place in a UNet2DConditionModel; the "
            "converted U-Net runs without it, and without the ControlNet (control_model)"
        )
    # Inside the U-Net every other tensor must find its place.
    if LDM_UNET_PREFIX in not_mapped:
        names = not_mapped[LDM_UNET_PREFIX]
        raise ConvertError(
            f"{src}: {len(names)} U-Net tensors have no place in a UNet2DConditionModel ({names[:5]}); "
            "this U-Net is not a Stable Diffusion one"
        )
    report["not_mapped"] = {group: len(names) for group, names in not_mapped.items()}
    with atomic_directory(out) as tmp:
        if unet is not None:
            unet.save_pretrained(tmp / "unet", safe_serialization=True)
        if vae is not None:
            vae.save_pretrained(tmp / "vae", safe_serialization=True)
        if scheduler_config is not None:
            (tmp / "scheduler").mkdir()
            schedule = _read_config(scheduler_config, "scheduler")
            (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(schedule, indent=2) + "\n")
        if pipeline:
            (tmp / "model_index.json").write_text(json.dumps({"_class_name": pipeline}, indent=2) + "\n")
    return report


# ---------------------------------------------------------------------------
# A LLaVA LoRA (LLaVA's train.py with --lora_enable, as the official UniFashion release's caption
# model was tuned: adapter_config.json + adapter_model.{safetensors,bin}, and non_lora_trainables.bin
# with the multimodal projector) -> the LoRA of our caption head's LLM. PEFT names the language
# model's tensors as ours does (base_model.model.model.layers.N.<module>.lora_A/B.weight); only the
# projector has no counterpart, since it reads CLIP patch features and our adapter reads Q-Former
# queries.

_LLAVA_LORA_NAME = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_[AB]\.weight")


def convert_llava_lora(src: str | os.PathLike, out: str | os.PathLike) -> dict:
    """A LLaVA LoRA folder -> ``out/lora.safetensors`` + ``out/lora.json`` (rank, alpha, dropout,
    target modules, layers), what ``[captioning] lora_init`` starts the caption head from. Every
    tensor is mapped or named with the reason it was not."""
    from safetensors.torch import load_file

    src = Path(src)
    config_path = src / "adapter_config.json"
    if not config_path.is_file():
        raise ConvertError(f"{src}: no adapter_config.json (not a PEFT LoRA folder)")
    config = read_json(config_path)
    for field in ("r", "lora_alpha", "target_modules"):
        if field not in config:
            raise ConvertError(f"{config_path}: missing field {field!r}")
    if (src / "adapter_model.safetensors").is_file():
        state = load_file(os.fspath(src / "adapter_model.safetensors"))
    elif (src / "adapter_model.bin").is_file():
        state = read_state(src / "adapter_model.bin")
    else:
        raise ConvertError(f"{src}: no adapter_model.safetensors or adapter_model.bin")
    lora: dict[str, torch.Tensor] = {}
    left: dict[str, str] = {}
    layers, modules = set(), set()
    for name, tensor in state.items():
        plain = name.replace(".default.", ".")  # older PEFT kept the adapter's name
        match = _LLAVA_LORA_NAME.fullmatch(plain)
        if match is None:
            left[name] = "not a LoRA weight of the language model's decoder layers"
            continue
        layers.add(int(match.group(1)))
        modules.add(match.group(2))
        lora[plain] = tensor
    if not lora:
        raise ConvertError(f"{src}: no LoRA weight of the language model (expected base_model.model.model.layers.*)")
    rank = int(config["r"])
    wrong = sorted(k for k, v in lora.items() if (v.shape[0] if ".lora_A." in k else v.shape[1]) != rank)
    if wrong:
        raise ConvertError(f"{src}: LoRA weights of another rank than r={rank}: {wrong[:3]}")
    declared = config["target_modules"]
    declared = sorted(declared) if isinstance(declared, list) else [declared]
    if isinstance(config["target_modules"], list) and set(declared) != modules:
        raise ConvertError(f"{config_path}: target_modules {declared}, but the weights adapt {sorted(modules)}")
    if layers != set(range(len(layers))):
        raise ConvertError(f"{src}: LoRA weights for layers {sorted(layers)}: some layers are missing")
    projector = src / "non_lora_trainables.bin"
    if projector.is_file():
        for name in read_state(projector):
            left[name] = (
                "LLaVA's multimodal projector reads CLIP ViT-L patch features, not Q-Former queries: "
                "the caption adapter (text_adapter) trains from scratch"
            )
    meta = {
        "rank": rank,
        "alpha": int(config["lora_alpha"]),
        "dropout": float(config.get("lora_dropout", 0.0)),
        "targets": sorted(modules),
        "layers": len(layers),
        "source": str(src),
    }
    with atomic_directory(out) as tmp:
        save_state(lora, tmp / "lora.safetensors")
        (tmp / "lora.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {**meta, "tensors": len(lora), "not_mapped": left}
