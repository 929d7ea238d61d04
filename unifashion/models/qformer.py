"""The Q-Former: learnable queries over frozen image features, a text path, and the retrieval heads.

Paper terms (UniFashion, section 3.1.1 and 3.2.1):

- Eq. 2  ``Z_I = QFormer(I, q)``: the 32 ``query_tokens`` cross-attend to the
  image features; ``Z_C = QFormer(C)``: the caption alone. Under the
  *unimodal* mask queries and text do not see each other, so the two are
  computed as two separate passes (:meth:`QFormer.image_queries`,
  :meth:`QFormer.text_states`); :meth:`QFormer.joint` runs them in one
  sequence with the explicit mask, and a test checks both agree.
- Eq. 3  ITC: image-text similarity = max over the query outputs of the
  cosine with the text [CLS] output, divided by a learnable temperature.
- Eq. 4  ITM: a binary match head on the query outputs of an (image, text)
  pass under the *bidirectional* mask, trained with hard negatives sampled
  from the ITC similarities (BLIP-2's recipe).
- Eq. 9  ``Z_R = QFormer(I_R, t, q)``: queries and guidance text under the
  bidirectional mask over the reference image; ``e_cls`` is the text [CLS]
  output (:meth:`QFormer.composed_embedding`).
- Eq. 10 ``L_cir = ITC(e_cls, Z_T) + ITC(e_cls, Z_C) + ITM(t, Z_T)``
  (:func:`cir_loss`; optionally + ITC(Z_C, Z_T) to keep the phase-1a alignment).

The transformer itself is transformers' ``Blip2QFormerModel`` (so a BLIP-2
checkpoint loads into it unchanged); its text embeddings are
``Blip2TextEmbeddings``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unifashion.config import QFormerConfig
from unifashion.utils.distributed import Shard, gather_rows
from unifashion.utils.errors import BackboneError

UNIMODAL, BIDIRECTIONAL = "unimodal", "bidirectional"


def attention_mask_4d(
    num_queries: int, text_mask: torch.Tensor, kind: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive self-attention mask (B, 1, Q+T, Q+T) for queries followed by text.

    ``unimodal``: queries see queries, text sees text (Eq. 2).
    ``bidirectional``: every query and text token sees every other (Eq. 9, ITM).
    Padding tokens of ``text_mask`` (B, T) are never attended to.
    """
    b, t = text_mask.shape
    n = num_queries + t
    keep = torch.ones(b, n, n, dtype=torch.bool, device=text_mask.device)
    if kind == UNIMODAL:
        keep[:, :num_queries, num_queries:] = False
        keep[:, num_queries:, :num_queries] = False
    elif kind != BIDIRECTIONAL:
        raise ValueError(f"mask kind: expected {UNIMODAL!r} or {BIDIRECTIONAL!r}, got {kind!r}")
    columns = torch.cat([torch.ones(b, num_queries, dtype=torch.bool, device=text_mask.device), text_mask.bool()], 1)
    keep &= columns[:, None, :]
    mask = torch.zeros(b, 1, n, n, dtype=dtype, device=text_mask.device)
    return mask.masked_fill(~keep[:, None], torch.finfo(dtype).min)


@dataclass
class TextBatch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)

    def to(self, device) -> TextBatch:
        return TextBatch(self.input_ids.to(device), self.attention_mask.to(device))

    def __getitem__(self, index) -> TextBatch:
        return TextBatch(self.input_ids[index], self.attention_mask[index])

    def __len__(self) -> int:
        return self.input_ids.shape[0]


class QFormer(nn.Module):
    """Queries + BERT-like Q-Former + ITC projections + ITM head."""

    def __init__(self, config: QFormerConfig, vision_dim: int, embeddings: nn.Module, qformer: nn.Module):
        super().__init__()
        self.config = config
        self.vision_dim = vision_dim
        d = config.hidden_size
        self.embeddings = embeddings  # Blip2TextEmbeddings: word + position
        self.qformer = qformer  # Blip2QFormerModel
        self.query_tokens = nn.Parameter(torch.randn(1, config.num_query_tokens, d) * 0.02)  # q (1, 32, d)
        self.vision_proj = nn.Linear(d, config.embed_dim)
        self.text_proj = nn.Linear(d, config.embed_dim)
        self.itm_head = nn.Linear(d, 2)
        self.temp = nn.Parameter(torch.tensor(0.07))  # ITC temperature (Eq. 3), learnable as in BLIP-2

    @property
    def num_queries(self) -> int:
        return self.config.num_query_tokens

    def temperature(self) -> torch.Tensor:
        return self.temp.clamp(0.001, 0.5)

    @property
    def device(self) -> torch.device:
        return self.query_tokens.device

    # -- passes -------------------------------------------------------------

    def image_queries(self, image_feats: torch.Tensor) -> torch.Tensor:
        """Z_I (Eq. 2): query outputs (B, Q, d) over image features (B, N, C) (moved to the model's
        device: feature tables stay on the CPU)."""
        image_feats = image_feats.to(self.device)
        queries = self.query_tokens.expand(image_feats.shape[0], -1, -1)
        out = self.qformer(query_embeds=self.embeddings(query_embeds=queries), encoder_hidden_states=image_feats)
        return out.last_hidden_state

    def text_states(self, text: TextBatch) -> torch.Tensor:
        """Z_C (Eq. 2): text token outputs (B, T, d); ``[:, 0]`` is e_cls."""
        embeds = self.embeddings(input_ids=text.input_ids)
        out = self.qformer(query_embeds=embeds, query_length=0, attention_mask=text.attention_mask)
        return out.last_hidden_state

    def joint(self, image_feats: torch.Tensor, text: TextBatch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and text in one sequence under mask ``kind``; returns
        (query outputs (B, Q, d), text outputs (B, T, d)). Image features move to the model's device."""
        image_feats = image_feats.to(self.device)
        queries = self.query_tokens.expand(image_feats.shape[0], -1, -1)
        embeds = self.embeddings(input_ids=text.input_ids, query_embeds=queries)  # (B, Q+T, d)
        mask = attention_mask_4d(self.num_queries, text.attention_mask, kind, embeds.dtype)
        out = self.qformer(
            query_embeds=embeds, query_length=self.num_queries, attention_mask=mask, encoder_hidden_states=image_feats
        ).last_hidden_state
        return out[:, : self.num_queries], out[:, self.num_queries :]

    # -- embeddings in the shared retrieval space ---------------------------

    def image_embeddings(self, image_feats: torch.Tensor) -> torch.Tensor:
        """Normalised projections of Z_I: (B, Q, e)."""
        return F.normalize(self.vision_proj(self.image_queries(image_feats)), dim=-1)

    def pool_text(self, text_out: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One vector per text from its token outputs (B, T, d): the [CLS] output
        (``text_pooling="cls"``, the paper's e_cls) or the mean over real tokens."""
        if self.config.text_pooling == "cls":
            return text_out[:, 0]
        weights = attention_mask.unsqueeze(-1).to(text_out.dtype)
        return (text_out * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def text_embedding(self, text: TextBatch) -> torch.Tensor:
        """Normalised projection of the pooled text output (e_cls of Z_C): (B, e)."""
        return F.normalize(self.text_proj(self.pool_text(self.text_states(text), text.attention_mask)), dim=-1)

    def composed_embedding(self, image_feats: torch.Tensor, text: TextBatch) -> torch.Tensor:
        """e_cls of Z_R (Eq. 9): reference image + guidance text, bidirectional: (B, e)."""
        _, text_out = self.joint(image_feats, text, BIDIRECTIONAL)
        return F.normalize(self.text_proj(self.pool_text(text_out, text.attention_mask)), dim=-1)

    def itm_logits(self, image_feats: torch.Tensor, text: TextBatch) -> torch.Tensor:
        """ITM (Eq. 4): match logits (B, 2) from the mean of the query outputs."""
        query_out, _ = self.joint(image_feats, text, BIDIRECTIONAL)
        return self.itm_head(query_out).mean(dim=1)


# ---------------------------------------------------------------------------
# similarities and losses


def max_over_queries(queries: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Eq. 3 similarity: ``queries`` (N, Q, e) x ``vectors`` (M, e) -> (M, N),
    each entry the best cosine over the N-th item's query outputs."""
    return torch.einsum("nqe,me->mnq", queries, vectors).amax(dim=-1)


def positives_from_ids(row_ids: torch.Tensor, col_ids: torch.Tensor) -> torch.Tensor:
    """(R, C) bool: which pairs show the same product (two views or two captions
    of one product in a batch are positives, not negatives)."""
    return row_ids[:, None] == col_ids[None, :]


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of ``logits`` (R, C) against a uniform distribution over each row's positives."""
    target = positives.float()
    target = target / target.sum(dim=1, keepdim=True).clamp(min=1.0)
    if label_smoothing:
        target = (1 - label_smoothing) * target + label_smoothing / logits.shape[1]
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def itc_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    temperature: torch.Tensor,
    ids: torch.Tensor,
    label_smoothing: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3, both directions. ``image_embeds`` (B, Q, e), ``text_embeds`` (B, e),
    ``ids`` (B,) product ids. Returns (loss, similarities (B_text, B_image)).
    BLIP-2 smooths the targets by 0.1 (so the loss never reaches 0)."""
    sim_t2i = max_over_queries(image_embeds, text_embeds)  # (B, B)
    positives = positives_from_ids(ids, ids)
    loss = (
        contrastive_loss(sim_t2i / temperature, positives, label_smoothing)
        + contrastive_loss(sim_t2i.t() / temperature, positives.t(), label_smoothing)
    ) / 2
    return loss, sim_t2i


def sample_hard_negatives(
    sim: torch.Tensor, positives: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """For each row of ``sim`` (R, C), one column index sampled with probability
    softmax(sim) over the non-positive columns (BLIP-2's hard negatives)."""
    # Drawn on the CPU, where the (seeded) generator lives; the indices go back to ``sim``'s device.
    sim, positives = sim.detach().float().cpu(), positives.cpu()
    weights = torch.softmax(sim, dim=1).masked_fill(positives, 0.0) + 1e-8 * (~positives)
    # A row whose every column is a positive (a batch of one product) draws uniformly.
    empty = weights.sum(dim=1, keepdim=True) == 0
    weights = torch.where(empty, torch.ones_like(weights), weights)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def itm_loss(
    model: QFormer,
    image_feats: torch.Tensor,
    text: TextBatch,
    sim_t2i: torch.Tensor,
    ids: torch.Tensor,
    generator: torch.Generator | None = None,
    num_pairs: int | None = None,
    shard: Shard | None = None,
) -> torch.Tensor:
    """Eq. 4 with hard negatives (BLIP-2). The first ``num_pairs`` (default:
    all B) matched pairs of the batch are positives; each of their texts gets a
    hard negative image and each image a hard negative text, drawn from the
    whole batch by ITC similarity (``sim_t2i`` (B, B)). Cross-entropy over the
    3k pairs; with a ``shard`` (:class:`unifashion.utils.distributed.Shard`) this
    process scores its share of them (every process draws the same negatives)."""
    k = image_feats.shape[0] if num_pairs is None else min(num_pairs, image_feats.shape[0])
    positives = positives_from_ids(ids, ids)
    neg_image = sample_hard_negatives(sim_t2i[:k], positives[:k], generator)  # an image for each text
    neg_text = sample_hard_negatives(sim_t2i.t()[:k], positives.t()[:k], generator)  # a text for each image
    feats = torch.cat([image_feats[:k], image_feats[neg_image], image_feats[:k]], 0)
    texts = TextBatch(
        torch.cat([text.input_ids[:k], text.input_ids[:k], text.input_ids[neg_text]], 0),
        torch.cat([text.attention_mask[:k], text.attention_mask[:k], text.attention_mask[neg_text]], 0),
    )
    labels = torch.cat([torch.ones(k), torch.zeros(2 * k)]).long().to(feats.device)
    if shard is not None and shard.world > 1:
        lo, hi = shard.bounds(3 * k)
        feats, texts, labels = feats[lo:hi], texts[lo:hi], labels[lo:hi]
    return F.cross_entropy(model.itm_logits(feats, texts), labels)


@dataclass
class CirLosses:
    total: torch.Tensor
    itc_target: torch.Tensor
    itc_caption: torch.Tensor
    itm: torch.Tensor
    itc_pair: torch.Tensor  # ITC(Z_C, Z_T) of the target pair; 0 unless asked for


def cir_loss(
    model: QFormer,
    reference_feats: torch.Tensor,
    text: TextBatch,
    target_feats: torch.Tensor,
    target_caption: TextBatch,
    target_ids: torch.Tensor,
    generator: torch.Generator | None = None,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    itm_pairs: int | None = None,
    pair_itc_weight: float = 0.0,
    shard: Shard | None = None,
) -> CirLosses:
    """Eq. 10: ``ITC(e_cls, Z_T) + ITC(e_cls, Z_C) + ITM(t, Z_T)``.

    ``e_cls`` (B, e): composed embedding of (reference, guidance text);
    ``Z_T``: target image query embeddings; ``Z_C``: the target's caption,
    embedded by the text path (ground truth or generated: the caller chooses).
    Triplets sharing a target are positives of each other. ITM uses the first
    ``itm_pairs`` triplets of the batch (all by default) as positives, with hard
    negatives drawn from the whole batch.

    ``pair_itc_weight`` > 0 adds ITC(Z_C, Z_T) between each target image and its
    caption (Eq. 3, both directions): not in Eq. 10, it keeps phase 1a's
    cross-modal alignment while phase 2 trains the same Q-Former, and costs
    nothing extra since both sides are computed already.
    """
    shard = shard or Shard()
    lo, hi = shard.bounds(reference_feats.shape[0])
    e_cls = gather_rows(model.composed_embedding(reference_feats[lo:hi], text[lo:hi]), shard)  # (B, e)
    z_t = F.normalize(model.vision_proj(model.image_queries(target_feats[lo:hi])), dim=-1)  # (b, Q, e)
    z_t = gather_rows(z_t, shard)  # (B, Q, e)
    z_c = gather_rows(model.text_embedding(target_caption[lo:hi]), shard)  # (B, e)
    temperature = model.temperature()
    positives = positives_from_ids(target_ids, target_ids)
    sim_target = max_over_queries(z_t, e_cls)  # (B_query, B_target)
    loss_t = contrastive_loss(sim_target / temperature, positives)
    loss_c = contrastive_loss(e_cls @ z_c.t() / temperature, positives)
    loss_m = itm_loss(model, target_feats, text, sim_target.float(), target_ids, generator, itm_pairs, shard)
    total = weights[0] * loss_t + weights[1] * loss_c + weights[2] * loss_m
    loss_p = torch.zeros((), device=total.device)
    if pair_itc_weight > 0:
        loss_p, _ = itc_loss(z_t, z_c, temperature, target_ids)
        total = total + pair_itc_weight * loss_p
    return CirLosses(total, loss_t.detach(), loss_c.detach(), loss_m.detach(), loss_p.detach())


def build_qformer(config: QFormerConfig, vision_dim: int) -> QFormer:
    """The Q-Former of ``config.init``: MiniLM-initialised, random, or BLIP-2's weights."""
    from unifashion.backbones import text as text_backbone

    if config.init == "minilm":
        embeddings, qformer = text_backbone.init_qformer_from_minilm(config, vision_dim)
        model = QFormer(config, vision_dim, embeddings, qformer)
    elif config.init == "random":
        embeddings, qformer = text_backbone.build_qformer(config, vision_dim)
        model = QFormer(config, vision_dim, embeddings, qformer)
    elif config.init == "blip2":
        embeddings, qformer, query_tokens, heads = text_backbone.load_blip2_qformer(config, vision_dim)
        model = QFormer(config, vision_dim, embeddings, qformer)
        with torch.no_grad():
            model.query_tokens.copy_(query_tokens)
        for ours, theirs in (
            ("vision_proj", "vision_projection"),
            ("text_proj", "text_projection"),
            ("itm_head", "itm_head"),
        ):
            if theirs not in heads:
                continue
            shape = tuple(heads[theirs]["weight"].shape)
            if tuple(getattr(model, ours).weight.shape) != shape:
                raise BackboneError(
                    f"qformer.embed_dim: the {theirs} of {config.source} maps {shape[1]} -> {shape[0]}, "
                    f"the config's {ours} {config.hidden_size} -> {getattr(model, ours).weight.shape[0]}"
                )
            getattr(model, ours).load_state_dict(heads[theirs])
    else:
        raise ValueError(f"qformer.init: unknown {config.init!r}")
    return model
