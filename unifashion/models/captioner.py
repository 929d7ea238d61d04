"""The caption head: a causal LM prompted with the adapted Q-Former queries (paper 3.1.2, Eq. 6 and 11, App. E).

The 32 query outputs ``Z`` (B, 32, d) of the Q-Former pass through the text
adapter ``f_theta`` to the LLM's embedding width and sit inside the chat
template as a soft prompt, followed by the instruction of one caption style::

    USER: <32 adapted queries> + instruction.  ASSISTANT: <answer>

(with the LLM's own chat template where it has one). ITG (Eq. 6) is the
language-modelling loss on the answer tokens only. LoRA (peft) adapts the
LLM's attention projections; phase 1b trains ``text_adapter`` + LoRA with the
Q-Former frozen, phase 2 keeps the whole LLM (LoRA included) frozen and lets
the ITG gradient reach the adapter and the Q-Former (:meth:`Captioner.set_trainable`).

Generation is batched, with the KV cache (switchable for the benchmark),
greedy, beam search or sampling, and is deterministic for a seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.config import LLMConfig
from unifashion.models.adapters import QueryAdapter
from unifashion.utils.errors import ConfigError, UniFashionError
from unifashion.utils.io import atomic_write_json

# One instruction per caption style (App. E). ``attributes`` is the
# attribute-rich style ("category: dress; colour: red; ...") that states every
# attribute the data labels; the other two follow the dataset's own captions.
CAPTION_STYLES: dict[str, str] = {
    "title": "Write a short product title for this garment.",
    "description": "Describe this garment for its product page.",
    "attributes": "List every attribute of this garment.",
}
SYSTEM_PROMPT = "You write fashion product captions."
SOFT_PROMPT_MARK = "<queries>"

DecodeMode = Literal["greedy", "beam", "sample"]


@dataclass(frozen=True)
class Decoding:
    """How :meth:`Captioner.generate` picks tokens."""

    mode: DecodeMode = "greedy"
    # None: the caption head's own length (``LLMConfig.max_new_tokens``, the one default).
    max_new_tokens: int | None = None
    num_beams: int = 4  # beam only
    temperature: float = 0.7  # sample only
    top_p: float = 0.9  # sample only
    seed: int = 0
    use_cache: bool = True  # the KV cache; off only to measure what it saves
    # Greedy and sampling: a row that has written its end token leaves the batch (see
    # ``Captioner.decode_loop``); off only to measure what it saves.
    prune: bool = True

    def generate_kwargs(self, end_id: int, pad_id: int) -> dict[str, Any]:
        """Arguments of transformers' ``generate`` for this decoding."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "use_cache": self.use_cache,
            "eos_token_id": end_id,
            "pad_token_id": pad_id,
        }
        if self.mode == "greedy":
            kwargs.update(do_sample=False, num_beams=1)
        elif self.mode == "beam":
            kwargs.update(do_sample=False, num_beams=self.num_beams, early_stopping=True)
        else:
            kwargs.update(do_sample=True, num_beams=1, temperature=self.temperature, top_p=self.top_p, top_k=0)
        return kwargs

    def __post_init__(self) -> None:
        if self.mode not in ("greedy", "beam", "sample"):
            raise ConfigError(f"decoding mode: expected greedy, beam or sample, got {self.mode!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: expected a positive integer, got {self.max_new_tokens}")


def check_style(style: str, styles: dict[str, str]) -> str:
    if style not in styles:
        raise ConfigError(f"style: expected one of {', '.join(styles)}, got {style!r}")
    return style


class Captioner(nn.Module):
    """``text_adapter`` (f_theta) + a causal LM with LoRA + its tokenizer."""

    def __init__(
        self, config: LLMConfig, query_dim: int, llm: nn.Module, tokenizer, styles: dict[str, str] | None = None
    ):
        super().__init__()
        self.config = config
        self.query_dim = query_dim
        self.llm = llm  # a peft model (LoRA) around the causal LM
        self.tokenizer = tokenizer
        self.styles = dict(styles or CAPTION_STYLES)
        width = llm.get_input_embeddings().weight.shape[1]
        self.text_adapter = QueryAdapter(query_dim, width)
        self._prompts: dict[str, tuple[list[int], list[int]]] = {}

    @classmethod
    def build(cls, config: LLMConfig, query_dim: int, *, styles: dict[str, str] | None = None) -> Captioner:
        """The preset's LLM (frozen) with fresh LoRA weights and a fresh adapter
        (``lora_rank`` 0: no LoRA, the adapter alone learns to prompt the frozen LLM)."""
        from peft import LoraConfig, get_peft_model

        from unifashion.backbones.llm import load_llm

        if config.lora_rank < 0:
            raise ConfigError(f"llm.lora_rank: expected 0 (no LoRA) or a positive rank, got {config.lora_rank}")
        tokenizer, base = load_llm(config)
        if config.lora_rank == 0:
            base.requires_grad_(False)
            return cls(config, query_dim, base, tokenizer, styles)
        lora = LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.lora_targets),
            bias="none",
        )
        llm = get_peft_model(base, lora)  # freezes every base weight
        return cls(config, query_dim, llm, tokenizer, styles)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the LLM's layer activations in the backward pass (training only). Non-reentrant,
        so gradients reach the soft prompt even though the LLM's own embeddings are frozen."""
        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5's name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- which parameters train ----------------------------------------------

    def lora_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.llm.named_parameters() if "lora_" in n]

    def set_trainable(self, *, adapter: bool, lora: bool) -> None:
        """Phase 1b: adapter and LoRA; phase 2: adapter only (the LLM with its LoRA frozen)."""
        for p in self.text_adapter.parameters():
            p.requires_grad_(adapter)
        for n, p in self.llm.named_parameters():
            p.requires_grad_(lora and "lora_" in n)

    def load_lora(self, folder: str | os.PathLike) -> None:
        """Start from LoRA weights converted by ``unifashion convert llava-lora`` (``lora.safetensors``
        + ``lora.json``): rank, alpha and target modules must be this LLM's; every LoRA weight of
        the LLM must be there and nothing else."""
        folder = Path(folder)
        meta_path = folder / "lora.json"
        if not meta_path.is_file() or not (folder / "lora.safetensors").is_file():
            raise UniFashionError(f"{folder}: expected lora.json and lora.safetensors (unifashion convert llava-lora)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ours = {
            "rank": self.config.lora_rank,
            "alpha": self.config.lora_alpha,
            "targets": sorted(self.config.lora_targets),
        }
        theirs = {"rank": meta.get("rank"), "alpha": meta.get("alpha"), "targets": sorted(meta.get("targets", []))}
        if ours != theirs:
            raise ConfigError(
                f"{meta_path}: LoRA {theirs}, but the LLM is set up with {ours}; set [captioning] lora_rank and "
                "lora_alpha and [model.llm] lora_targets to the file's"
            )
        _load_lora_file(self.llm, folder / "lora.safetensors")

    # -- prompts ----------------------------------------------------------------

    def prompt_ids(self, style: str) -> tuple[list[int], list[int]]:
        """Token ids before and after the soft prompt for ``style``."""
        check_style(style, self.styles)
        if style not in self._prompts:
            prefix, suffix = render_prompt(self.tokenizer, self.styles[style])
            encode = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]
            self._prompts[style] = (encode(prefix), encode(suffix))
        return self._prompts[style]

    @property
    def end_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("the LLM's tokenizer has no end-of-sequence token")
        return int(eos)

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else self.end_id

    def _embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        return table(torch.as_tensor(ids, dtype=torch.long, device=table.weight.device))

    # -- ITG (Eq. 6) ---------------------------------------------------------------

    def itg_loss(self, query_outputs: torch.Tensor, styles: list[str], answers: list[str]) -> torch.Tensor:
        """Cross-entropy of the answer tokens given soft prompt + instruction, averaged over
        the answer tokens. ``query_outputs`` (B, Q, d); one style and one answer per row."""
        total, tokens = self.itg_token_loss(query_outputs, styles, answers)
        return total / tokens

    def itg_token_loss(
        self, query_outputs: torch.Tensor, styles: list[str], answers: list[str]
    ) -> tuple[torch.Tensor, int]:
        """The summed cross-entropy of every answer token, and how many there are: what a
        caller averaging over a batch split between processes needs (each shard holds
        another number of tokens, so the mean of shard means is not the batch's mean)."""
        if not (len(styles) == len(answers) == query_outputs.shape[0]):
            raise ValueError("itg_loss: one style and one answer per row of query_outputs")
        soft = self.text_adapter(query_outputs)  # (B, Q, h)
        q = soft.shape[1]
        rows, labels = [], []
        for style, answer in zip(styles, answers, strict=True):
            prefix, suffix = self.prompt_ids(style)
            target = self.tokenizer(answer.strip(), add_special_tokens=False)["input_ids"] + [self.end_id]
            rows.append(prefix + [self.pad_id] * q + suffix + target)
            labels.append([-100] * (len(prefix) + q + len(suffix)) + target)
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        lab = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (r, la) in enumerate(zip(rows, labels, strict=True)):
            ids[i, : len(r)] = torch.tensor(r)
            lab[i, : len(la)] = torch.tensor(la)
            mask[i, : len(r)] = 1
        device = soft.device
        embeds = self._embed(ids.to(device))  # (B, L, h)
        start = len(self.prompt_ids(styles[0])[0])  # the prefix is the same for every style
        embeds = torch.cat([embeds[:, :start], soft.to(embeds.dtype), embeds[:, start + q :]], dim=1)
        # Logits only from the position before the first answer token on: the
        # vocabulary projection of the prompt positions would be thrown away.
        first = int((lab != -100).int().argmax(dim=1).min())
        keep = width - first + 1
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask.to(device), logits_to_keep=keep).logits
        targets = lab[:, width - keep + 1 :].to(device)  # the token each kept position predicts
        total = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        return total, int((targets != -100).sum())

    # -- generation -------------------------------------------------------------------

    def prompt_embeddings(self, soft: torch.Tensor, style: str) -> torch.Tensor:
        """[prefix tokens, soft prompt (B, Q, h), instruction tokens]: (B, L, h)."""
        prefix, suffix = self.prompt_ids(style)
        b = soft.shape[0]
        pre = self._embed(prefix).unsqueeze(0).expand(b, -1, -1)
        post = self._embed(suffix).unsqueeze(0).expand(b, -1, -1)
        return torch.cat([pre, soft.to(pre.dtype), post], dim=1)

    @torch.no_grad()
    def generate_from_embeddings(self, embeds: torch.Tensor, decoding: Decoding | None = None) -> list[list[int]]:
        """New token ids (up to the end token) for prompts given as embeddings (B, L, h), all of length L.

        Greedy and sampling run the loop below, where the KV cache is visible
        (and can be switched off to measure it); beam search is transformers'."""
        decoding = decoding or Decoding()
        if decoding.max_new_tokens is None:
            decoding = dataclasses.replace(decoding, max_new_tokens=self.config.max_new_tokens)
        if decoding.mode == "beam":
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            rows = self.llm.generate(
                inputs_embeds=embeds, attention_mask=mask, **decoding.generate_kwargs(self.end_id, self.pad_id)
            ).tolist()
        else:
            rows = self.decode_loop(embeds, decoding)
        return [row[: row.index(self.end_id)] if self.end_id in row else row for row in rows]

    @contextlib.contextmanager
    def lora_merged(self) -> Iterator[None]:
        """Inside the block the LoRA update ``B A`` is folded into the LM's weights, so each adapted
        layer is one matrix product per token instead of three (generation only: no gradient reaches
        LoRA while merged). Unfolded on leaving, even after an error; the weights come back up to
        float rounding (the base LM is frozen, and only the LoRA weights are ever saved)."""
        base_model = getattr(self.llm, "base_model", None)
        if self.config.lora_rank == 0 or not hasattr(base_model, "merge_adapter"):
            yield
            return
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.llm.parameters()):
            raise UniFashionError("Captioner.lora_merged: generation only (run it under torch.no_grad())")
        base_model.merge_adapter()
        try:
            yield
        finally:
            base_model.unmerge_adapter()

    def _cache_argument(self) -> str:
        """The KV cache's keyword in the LM's forward: ``cache`` in recent transformers, else ``past_key_values``."""
        import inspect

        base = self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    @torch.no_grad()
    def decode_loop(self, embeds: torch.Tensor, decoding: Decoding, *, stop_at_end: bool = True) -> list[list[int]]:
        """Greedy or top-p sampling, one token per step for the rows still writing.

        With the cache, each step feeds only the newest token and the keys and
        values of everything before it; without, each step runs the whole
        sequence again. With ``decoding.prune`` (the default), a row that has written its
        end token leaves the batch (and its keys and values the cache): the
        captions of one batch differ in length (on a trained head, 12 tokens at
        the median while a few run to ``max_new_tokens``), and without pruning
        every step computes every row until the longest is done. Each row's
        tokens are the same either way, up to float rounding; sampling draws
        from one generator over the rows still writing, so its draws depend on
        pruning. ``stop_at_end=False`` always runs ``max_new_tokens`` steps
        on every row (for speed measurements)."""
        b = embeds.shape[0]
        generator = torch.Generator(device="cpu").manual_seed(decoding.seed)
        sequence = embeds  # (A, L, h): what the model has not cached yet, or everything without the cache
        past = None
        tokens = torch.full((b, decoding.max_new_tokens), self.pad_id, dtype=torch.long)
        active = torch.arange(b)  # the rows of ``embeds`` still writing, in order
        done = torch.zeros(b, dtype=torch.bool)  # without pruning: rows that wrote their end token
        length = embeds.shape[1]
        steps = 0
        for step in range(decoding.max_new_tokens):
            mask = torch.ones(len(active), length, dtype=torch.long, device=embeds.device)
            cache = {self._cache_argument(): past} if past is not None else {}
            out = self.llm(
                inputs_embeds=sequence, attention_mask=mask, use_cache=decoding.use_cache, logits_to_keep=1, **cache
            )
            logits = out.logits[:, -1].float().cpu()  # (A, V)
            if decoding.mode == "greedy":
                next_token = logits.argmax(dim=-1)
            else:
                next_token = sample_top_p(logits / decoding.temperature, decoding.top_p, generator)
            steps = step + 1
            ended = (next_token == self.end_id) & stop_at_end
            if decoding.prune:
                tokens[active, step] = next_token
                keep = (~ended).nonzero().squeeze(1)
            else:
                next_token = torch.where(done, torch.full_like(next_token, self.pad_id), next_token)
                tokens[:, step] = next_token
                done |= ended
                ended = done
                keep = torch.arange(len(active))
            if bool(ended.all()):
                break
            new = self._embed(next_token[keep].to(embeds.device)).unsqueeze(1).to(embeds.dtype)  # (A', 1, h)
            if decoding.use_cache:
                past = out["cache"] if "cache" in out else out["past_key_values"]
                if len(keep) < len(active):
                    past.batch_select_indices(keep.to(embeds.device))
                sequence = new
            else:
                sequence = torch.cat([sequence[keep.to(embeds.device)], new], dim=1)
            active = active[keep]
            length += 1
        return tokens[:, :steps].tolist()

    @torch.no_grad()
    def generate(self, query_outputs: torch.Tensor, style: str, decoding: Decoding | None = None) -> list[str]:
        """One caption of ``style`` per row of ``query_outputs`` (B, Q, d)."""
        embeds = self.prompt_embeddings(self.text_adapter(query_outputs), style)
        ids = self.generate_from_embeddings(embeds, decoding)
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in ids]

    # -- persistence ------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """``text_adapter.safetensors``, ``lora.safetensors`` and ``captioner.json`` into ``folder``."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        adapter = {k: v.detach().cpu().contiguous() for k, v in self.text_adapter.state_dict().items()}
        save_file(adapter, os.fspath(folder / "text_adapter.safetensors"))
        if self.config.lora_rank > 0:
            lora = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.llm).items()}
            save_file(lora, os.fspath(folder / "lora.safetensors"))
        meta = {"llm": dataclasses.asdict(self.config), "query_dim": self.query_dim, "styles": self.styles}
        atomic_write_json(folder / "captioner.json", meta)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> Captioner:
        from safetensors.torch import load_file

        from unifashion.backbones.hub import load_state_strict
        from unifashion.config import from_dict

        folder = Path(folder)
        meta_path = folder / "captioner.json"
        if not meta_path.is_file():
            raise UniFashionError(f"{folder}: no captioner.json (this checkpoint has no caption head)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{meta_path}: not valid JSON ({exc})") from None
        for key in ("llm", "query_dim", "styles"):
            if key not in meta:
                raise ConfigError(f"{meta_path}: missing field {key!r}")
        config = from_dict(LLMConfig, meta["llm"], where=f"{meta_path}: llm")
        model = cls.build(config, int(meta["query_dim"]), styles=meta["styles"])
        needed = (
            ("text_adapter.safetensors", "lora.safetensors") if config.lora_rank > 0 else ("text_adapter.safetensors",)
        )
        for name in needed:
            if not (folder / name).is_file():
                raise UniFashionError(f"{folder}: {name} is missing")
        load_state_strict(
            model.text_adapter,
            load_file(os.fspath(folder / "text_adapter.safetensors")),
            what=str(folder / "text_adapter.safetensors"),
        )
        if config.lora_rank == 0:
            return model.eval()
        _load_lora_file(model.llm, folder / "lora.safetensors")
        return model.eval()


def _load_lora_file(llm: nn.Module, path: Path) -> None:
    """LoRA weights (PEFT's names) from ``path`` into ``llm``: every LoRA weight there, nothing else."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(llm, load_file(os.fspath(path)))
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing or unexpected:
        raise UniFashionError(
            f"{path}: does not fit the LLM (missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)}))"
        )


def sample_top_p(logits: torch.Tensor, top_p: float, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``logits`` (B, V) from the smallest set of most likely
    tokens whose probability reaches ``top_p`` (nucleus sampling)."""
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)  # the most likely token always stays
    pick = torch.multinomial(sorted_probs, 1, generator=generator)  # (B, 1) index into the sorted order
    return order.gather(1, pick).squeeze(1)


def render_prompt(tokenizer, instruction: str) -> tuple[str, str]:
    """The prompt text before and after the soft prompt: the LLM's chat
    template when it has one (a short system turn, then the user turn holding
    the queries and the instruction), else the paper's plain
    ``"USER: <queries> instruction ASSISTANT:"``."""
    content = f"{SOFT_PROMPT_MARK}\n{instruction}"
    if getattr(tokenizer, "chat_template", None):
        text = None
        for messages in (
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}],
            [{"role": "user", "content": content}],  # templates without a system role
        ):
            try:
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
                break
            except Exception:  # a template may reject the system role in its own way
                continue
        if text is not None and text.count(SOFT_PROMPT_MARK) == 1:
            before, after = text.split(SOFT_PROMPT_MARK)
            return before, after
    return "USER: ", f" {instruction} ASSISTANT:"
