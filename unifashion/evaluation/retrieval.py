"""``unifashion eval retrieval``: cross-modal and composed retrieval with the paper's protocols.

Cross-modal retrieval (CMR), image -> text and text -> image, R@1/5/10:

- ``random100``: for each query product, 100 candidates of its category, one
  of them the true match (the random-100 protocol of FashionGen papers),
  sampled with a fixed seed; ITC ranking, and ITC + ITM re-ranking of the top k.
- ``full``: every image against every caption of the split.

Composed retrieval (CIR), the Fashion-IQ protocol: per category the index is
every image of that category in the split (the reference included), the query
text joins the two relative captions; R@10, R@50, their mean, and the average
over categories. Beside the model (``composed``: e_cls of Eq. 9, and its ITM
re-ranking) the same run scores three baselines on the same backbones:
``image_only`` (the reference image's embedding), ``text_only`` (the caption's
embedding) and ``late_fusion`` (normalised sum of both, CLIP4Cir-style).

With a caption head (or captions given for the split's products), CIR also
runs the paper's Table 4 variants: each candidate is represented by the
caption the model generated for it, embedded by the Q-Former text path
(``Z_C``); ``without_captions`` ranks by sim(e_cls, Z_T) alone,
``without_image`` by sim(e_cls, Z_C) alone, and ``full`` by
sim(e_cls, Z_T) + w * sim(e_cls, Z_C).

Scores use the protocol functions of :mod:`unifashion.evaluation.protocols`
(ties count against the target).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unifashion.backbones.feature_cache import FeatureCache, FeatureTable
from unifashion.checkpoint import CAPTION_FOLDER
from unifashion.config import CAPTION_WEIGHT
from unifashion.data.fashioniq import CATEGORIES as FASHIONIQ_CATEGORIES
from unifashion.data.records import DatasetSplit
from unifashion.evaluation import protocols as P
from unifashion.models.qformer import max_over_queries
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.retrieval import EncodedImages, encode_composed, encode_images, encode_texts, itm_scores
from unifashion.utils.io import atomic_write_bytes, atomic_write_json

# Caption weights w of the fused CIR score reported side by side (the default w is config.CAPTION_WEIGHT).
FUSION_SWEEP = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def _metrics(ranks: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    out = P.recall_at_k(ranks, ks)
    out["mean"] = float(np.mean(list(out.values())))
    return out


def evaluate_cmr(
    model: RetrievalModel,
    data: DatasetSplit,
    images: EncodedImages,
    *,
    seed: int = 0,
    candidates: int = 100,
    max_queries: int = 1000,
    rerank_k: int = 10,
    bf16: bool = True,
    progress: bool = False,
    candidate_lists: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cross-modal retrieval on the products of ``data`` (their first caption). Random-100 draws
    its candidates with ``seed``, or reads fixed lists from ``candidate_lists`` (a JSON-lines
    file, :func:`unifashion.evaluation.protocols.read_candidate_lists`)."""
    products = [p for p in data.products if p.captions]
    texts = [p.captions[0] for p in products]
    text_embeds = encode_texts(model, texts, bf16=bf16)  # (P, e)
    first = np.array([images.table.index[str(p.images[0])] for p in products])
    # Full split: every image of every product.
    image_rows, image_product = [], []
    for pi, p in enumerate(products):
        for r in p.images:
            image_rows.append(images.table.index[str(r)])
            image_product.append(pi)
    image_rows_t = torch.as_tensor(image_rows)
    sim_full = max_over_queries(images.embeds[image_rows_t], text_embeds).numpy()  # (P texts, M images)
    product_of_image = np.array(image_product)
    positives_t2i = product_of_image[None, :] == np.arange(len(products))[:, None]
    result: dict[str, Any] = {
        "products": len(products),
        "images": len(image_rows),
        "full": {
            "i2t": _metrics(P.target_ranks(sim_full.T, positives_t2i.T)),
            "t2i": _metrics(P.target_ranks(sim_full, positives_t2i)),
        },
    }
    dump = {
        "texts": texts,
        "text_embeds": text_embeds.numpy(),
        "image_rows": image_rows,
        "image_product": image_product,
    }
    sim = max_over_queries(images.embeds[torch.as_tensor(first)], text_embeds).numpy()  # (P texts, P images)
    if candidate_lists is not None:
        lists = P.read_candidate_lists(candidate_lists, [p.id for p in products])
        r100: dict[str, Any] = {
            "candidates_file": str(candidate_lists),
            "queries": {d: len(q) for d, (q, _) in lists.items()},
            "candidates": int(next(iter(lists.values()))[1].shape[1]),
        }
    else:
        if len(products) < candidates:
            result["random100"] = {"skipped": f"needs at least {candidates} products, the split has {len(products)}"}
            return result, dump
        rng = np.random.default_rng(seed)
        queries = np.arange(len(products))
        if len(queries) > max_queries:
            queries = np.sort(rng.choice(queries, size=max_queries, replace=False))
        groups = [p.subcategory or p.category for p in products]
        cand, topped = P.random_candidates(groups, n=candidates, seed=seed, queries=queries.tolist())
        lists = {d: (queries, cand) for d in P.DIRECTIONS}
        r100 = {
            "queries": len(queries),
            "candidates": candidates,
            "topped_up_from_other_categories": topped,
            "seed": seed,
        }
    base = {"i2t": sim.T, "t2i": sim}  # (query items, all items) per direction
    r100["itc"] = {d: _metrics(P.random100_ranks(base[d][q], c, q)) for d, (q, c) in lists.items()}
    if rerank_k > 0:
        feats = images.table.feats
        temperature = model.qformer.temperature().item()
        # ITM log-odds by (image item, text item): a pair in the top k of both directions (a third
        # of them on FashionSynth, the true pairs among them) is scored once.
        known: dict[tuple[int, int], float] = {}

        def itm_of(image_items: np.ndarray, text_items: np.ndarray) -> np.ndarray:
            pairs = list(zip(image_items.tolist(), text_items.tolist(), strict=True))
            new = list(dict.fromkeys(p for p in pairs if p not in known))
            if new:
                rows = torch.as_tensor(first[[i for i, _ in new]])
                scored = itm_scores(model, feats[rows], [texts[t] for _, t in new], bf16=bf16)
                known.update(zip(new, scored.tolist(), strict=True))
            return np.array([known[p] for p in pairs], dtype=np.float64)

        def sub(direction: str) -> dict[str, float]:
            queries, cand = lists[direction]
            scores = np.take_along_axis(base[direction][queries], cand, axis=1)

            def rescore(q_idx, c_idx):
                items_q, items_c = queries[q_idx], cand[q_idx, c_idx]
                image_items, text_items = (items_q, items_c) if direction == "i2t" else (items_c, items_q)
                return itm_of(image_items, text_items) + scores[q_idx, c_idx] / temperature  # ITM log-odds + ITC logit

            reranked = P.rerank_top_k(scores, rerank_k, rescore)
            positives = cand == queries[:, None]
            return _metrics(P.target_ranks(reranked, positives))

        r100["itc_itm"] = {**{d: sub(d) for d in lists}, "rerank_k": rerank_k}
    result["random100"] = r100
    return result, dump


CIR_VARIANTS = (
    "composed",
    "composed_itm",
    "composed_captions",
    "composed_fused",
    "image_only",
    "text_only",
    "late_fusion",
)
CIR_BASELINES = ("image_only", "text_only", "late_fusion")


def cir_triplets_by_category(data: DatasetSplit, products: dict) -> dict[str, list]:
    """The split's labelled triplets (reference and target among its products), per category."""
    by_cat: dict[str, list] = defaultdict(list)
    for t in data.triplets:
        if t.target is not None and t.reference in products and t.target in products:
            by_cat[t.category].append(t)
    return by_cat


def usable_candidate_captions(
    candidate_captions: dict[str, str] | None, products: dict, categories
) -> tuple[dict[str, str] | None, str | None]:
    """The candidate captions when every product of the searched categories has one; else None and
    why (the caption variants are then skipped rather than run on part of the index)."""
    if candidate_captions is None:
        return None, None
    absent = sorted(
        pid
        for pid, p in products.items()
        if any(p.in_category(c) for c in categories) and not (candidate_captions.get(pid) or "").strip()
    )
    if absent:
        return None, f"no candidate caption for {len(absent)} products (e.g. {', '.join(absent[:3])})"
    return candidate_captions, None


@dataclass
class CategoryQueries:
    """One category of the Fashion-IQ protocol: its index (every product of the category, first
    view, the reference included) and its queries (reference + the two relative captions)."""

    index_ids: list[str]
    index_rows: torch.Tensor  # (N,) rows of the encoded images
    ref_rows: torch.Tensor  # (T,)
    texts: list[str]  # (T,)
    target: np.ndarray  # (T,) column of each query's target in the index


def category_queries(triplets: list, products: dict, images: EncodedImages, cat: str) -> CategoryQueries:
    index_ids = [pid for pid, p in products.items() if p.in_category(cat)]
    col = {pid: i for i, pid in enumerate(index_ids)}
    row = images.table.index
    return CategoryQueries(
        index_ids=index_ids,
        index_rows=torch.as_tensor([row[str(products[pid].images[0])] for pid in index_ids]),
        ref_rows=torch.as_tensor([row[str(products[t.reference].images[0])] for t in triplets]),
        texts=[t.query_text() for t in triplets],
        target=np.array([col[t.target] for t in triplets]),
    )


def baseline_scores(images: EncodedImages, q: CategoryQueries, text_only: torch.Tensor) -> dict[str, np.ndarray]:
    """(T, N) scores of the baselines on the same backbones: the reference image's vector, the
    caption's embedding (``text_only``, (T, e)), and their normalised sum (CLIP4Cir-style)."""
    index_embeds = images.embeds[q.index_rows]  # (N, Q, e)
    ref_vec = images.vectors[q.ref_rows]  # (T, e)
    return {
        "image_only": (ref_vec @ images.vectors[q.index_rows].t()).numpy(),
        "text_only": max_over_queries(index_embeds, text_only).numpy(),
        "late_fusion": max_over_queries(index_embeds, F.normalize(ref_vec + text_only, dim=-1)).numpy(),
    }


def _itm_plus_itc(q_idx, c_idx, *, model, cand_feats, texts, base, temperature, bf16) -> np.ndarray:
    """ITM log-odds + ITC logit of (query, candidate) pairs."""
    itm = itm_scores(model, cand_feats[torch.as_tensor(c_idx)], [texts[q] for q in q_idx], bf16=bf16)
    return itm + base[q_idx, c_idx] / temperature


def composed_itm_scores(
    model: RetrievalModel, images: EncodedImages, q: CategoryQueries, base: np.ndarray, rerank_k: int, bf16: bool
) -> np.ndarray:
    """``base`` (T, N) with each query's top ``rerank_k`` re-ordered by ITM (+ the ITC logit)."""
    rescore = partial(
        _itm_plus_itc,
        model=model,
        cand_feats=images.table.feats[q.index_rows],
        texts=q.texts,
        base=base,
        temperature=model.qformer.temperature().item(),
        bf16=bf16,
    )
    return P.rerank_top_k(base, rerank_k, rescore)


def caption_scores(
    model: RetrievalModel, composed: torch.Tensor, captions: list[str], base: np.ndarray, weight: float, bf16: bool
) -> dict[str, np.ndarray]:
    """Table 4's variants: sim(e_cls, Z_C) with the candidates' captions (N,), and the fused
    sim(e_cls, Z_T) + ``weight`` x sim(e_cls, Z_C) with ``base`` = sim(e_cls, Z_T) (T, N)."""
    caption_embeds = encode_texts(model, captions, bf16=bf16)  # (N, e)
    by_caption = (composed @ caption_embeds.t()).numpy()  # (T, N)
    return {"composed_captions": by_caption, "composed_fused": base + weight * by_caption}


def cir_category_scores(model, images, q: CategoryQueries, *, rerank_k, captions, caption_weight, bf16):
    """Every variant's (T, N) scores for one category, and the composed queries (T, e)."""
    composed = encode_composed(model, images.table.feats[q.ref_rows], q.texts, bf16=bf16)  # (T, e) e_cls, Eq. 9
    text_only = encode_texts(model, q.texts, bf16=bf16)  # (T, e)
    scores = {"composed": max_over_queries(images.embeds[q.index_rows], composed).numpy()}
    scores.update(baseline_scores(images, q, text_only))
    if rerank_k > 0:
        scores["composed_itm"] = composed_itm_scores(model, images, q, scores["composed"], rerank_k, bf16)
    if captions is not None:
        cand = [captions[pid] for pid in q.index_ids]
        scores.update(caption_scores(model, composed, cand, scores["composed"], caption_weight, bf16))
    return scores, composed


def fusion_sweep(scores: dict[str, np.ndarray], target: np.ndarray) -> dict[float, dict[str, float]]:
    """Fashion-IQ recalls of the fused score at every caption weight of FUSION_SWEEP."""
    return {w: P.fashioniq_recalls(scores["composed"] + w * scores["composed_captions"], target) for w in FUSION_SWEEP}


def saturated_recalls(galleries: dict[str, int], ks: tuple[int, ...] = (10, 50)) -> dict[str, list[str]]:
    """The recalls that read 100 whatever the model does: R@K of a category whose gallery holds
    at most K images."""
    out = {cat: [f"R@{k}" for k in ks if n <= k] for cat, n in sorted(galleries.items())}
    return {cat: names for cat, names in out.items() if names}


def cir_summary(
    per: dict,
    sweep: dict,
    *,
    queries: int,
    rerank_k: int,
    caption_weight: float,
    caption_note,
    galleries: dict[str, int] | None = None,
) -> dict:
    """Per-category recalls and their average for each variant run, the margin over the best
    baseline, and the caption variants (Table 4); ``galleries`` (images per category) adds the
    gallery sizes and the recalls they saturate."""
    result: dict[str, Any] = {"queries": queries, "rerank_k": rerank_k}
    if galleries is not None:
        result["gallery"] = dict(sorted(galleries.items()))
        result["saturated"] = saturated_recalls(galleries)
    for name in CIR_VARIANTS:
        if per[name]:
            result[name] = {"per_category": per[name], "average": P.average_over_categories(per[name])}
            # Fashion-IQ's average covers its three categories only: beside a split's own average
            # over more categories (FashionSynth's six), the one that compares with published figures.
            if set(per[name]) > set(FASHIONIQ_CATEGORIES):
                three = {c: per[name][c] for c in FASHIONIQ_CATEGORIES}
                result[name]["average_dress_shirt_toptee"] = P.average_over_categories(three)
    best_baseline = max(result[b]["average"]["avg"] for b in CIR_BASELINES)
    result["margin_over_best_baseline"] = result["composed"]["average"]["avg"] - best_baseline
    if "composed_fused" in result:
        result["variants"] = {
            "full": result["composed_fused"]["average"],
            "without_captions": result["composed"]["average"],
            "without_image": result["composed_captions"]["average"],
            "caption_weight": caption_weight,
            # Every weight, for reading only: the default is not chosen on the evaluated split.
            "fusion_sweep": {str(w): P.average_over_categories(sweep[w]) for w in FUSION_SWEEP},
        }
    elif caption_note:
        result["variants"] = {"skipped": caption_note}
    return result


def evaluate_cir(
    model: RetrievalModel,
    data: DatasetSplit,
    images: EncodedImages,
    *,
    rerank_k: int = 20,
    bf16: bool = True,
    candidate_captions: dict[str, str] | None = None,
    caption_weight: float = CAPTION_WEIGHT,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Composed retrieval, Fashion-IQ protocol, with the baselines, per category.

    ``composed_itm`` re-ranks each query's top ``rerank_k`` by ITM; it can move
    R@10 only when ``rerank_k`` > 10, and R@50 only when ``rerank_k`` > 50.
    ``candidate_captions`` (product id -> caption) adds ``composed_captions``
    (captions only) and ``composed_fused`` (image + ``caption_weight`` x caption)."""
    products = data.product_map()
    by_cat = cir_triplets_by_category(data, products)
    if not by_cat:
        reason = "the split's triplets have no target labels" if data.triplets else "the split has no triplets"
        return {"skipped": reason}, {}
    captions, caption_note = usable_candidate_captions(candidate_captions, products, by_cat)
    per: dict[str, dict[str, dict[str, float]]] = {v: {} for v in CIR_VARIANTS}
    sweep: dict[float, dict[str, dict[str, float]]] = {w: {} for w in FUSION_SWEEP}
    dump: dict[str, Any] = {"queries": [], "composed": [], "index": {}}
    galleries: dict[str, int] = {}
    for cat in sorted(by_cat):
        q = category_queries(by_cat[cat], products, images, cat)
        galleries[cat] = len(q.index_ids)
        scores, composed = cir_category_scores(
            model, images, q, rerank_k=rerank_k, captions=captions, caption_weight=caption_weight, bf16=bf16
        )
        if captions is not None:
            for w, recalls in fusion_sweep(scores, q.target).items():
                sweep[w][cat] = recalls
        for name, s in scores.items():
            per[name][cat] = P.fashioniq_recalls(s, q.target)
        dump["queries"] += [
            {"reference": t.reference, "target": t.target, "text": text, "category": cat}
            for t, text in zip(by_cat[cat], q.texts, strict=True)
        ]
        dump["composed"].append(composed.numpy())
        dump["index"][cat] = q.index_ids
    queries = sum(len(v) for v in by_cat.values())
    summary = cir_summary(
        per,
        sweep,
        queries=queries,
        rerank_k=rerank_k,
        caption_weight=caption_weight,
        caption_note=caption_note,
        galleries=galleries,
    )
    return summary, dump


def evaluate_split(
    model: RetrievalModel,
    data: DatasetSplit,
    cache: FeatureCache,
    *,
    seed: int = 0,
    rerank_k: int = 10,
    cir_rerank_k: int = 20,
    max_queries: int = 1000,
    bf16: bool = True,
    dump_dir: str | os.PathLike | None = None,
    progress: bool = True,
    candidate_captions: dict[str, str] | None = None,
    caption_weight: float = CAPTION_WEIGHT,
    candidate_lists: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Every retrieval metric of one split (whatever parts its data allows); ``candidate_lists``:
    fixed random-100 candidates (see :func:`evaluate_cmr`)."""
    started = time.perf_counter()
    refs = [r for p in data.products for r in p.images]
    table = FeatureTable.build(refs, cache, progress=progress)
    images = encode_images(model, table, bf16=bf16, progress=progress)
    out: dict[str, Any] = {"split": data.split, "format": data.format}
    if any(p.captions for p in data.products):
        out["cmr"], cmr_dump = evaluate_cmr(
            model,
            data,
            images,
            seed=seed,
            rerank_k=rerank_k,
            max_queries=max_queries,
            bf16=bf16,
            progress=progress,
            candidate_lists=candidate_lists,
        )
    else:
        out["cmr"], cmr_dump = {"skipped": "the split's products have no captions"}, {}
    out["cir"], cir_dump = evaluate_cir(
        model,
        data,
        images,
        rerank_k=cir_rerank_k,
        bf16=bf16,
        candidate_captions=candidate_captions,
        caption_weight=caption_weight,
    )
    out["seconds"] = round(time.perf_counter() - started, 1)
    if dump_dir:
        write_dump(Path(dump_dir) / data.split, table, images, cmr_dump, cir_dump)
        out["dump"] = str(Path(dump_dir) / data.split)
    return out


def _npy(path: Path, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_dump(folder: Path, table: FeatureTable, images: EncodedImages, cmr: dict, cir: dict) -> None:
    """Embeddings with their ids, as NumPy arrays + JSON, to recompute any metric elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    _npy(folder / "image_embeds.npy", images.embeds.numpy())  # (M, Q, e): score = max over Q of cosine
    atomic_write_json(folder / "images.json", list(table.index))
    files = ["image_embeds.npy", "images.json"]
    if cmr:
        _npy(folder / "text_embeds.npy", cmr["text_embeds"])
        atomic_write_json(
            folder / "texts.json",
            {"texts": cmr["texts"], "image_rows": cmr["image_rows"], "image_product": cmr["image_product"]},
        )
        files += ["text_embeds.npy", "texts.json"]
    if cir:
        _npy(folder / "cir_query_embeds.npy", np.concatenate(cir["composed"]))
        atomic_write_json(folder / "cir_queries.json", {"queries": cir["queries"], "index": cir["index"]})
        files += ["cir_query_embeds.npy", "cir_queries.json"]
    readme = {
        "files": files,
        "similarity": (
            "cosine between a text (or composed query) vector and each of an image's query vectors; "
            "take the max over queries"
        ),
        "images.json": "row i of image_embeds.npy is the image at images.json[i]",
        "texts.json": (
            "row j of text_embeds.npy is texts[j], the caption of product j; "
            "image_product[k] is the product of image row image_rows[k]"
        ),
        "cir_queries.json": (
            "row i of cir_query_embeds.npy is queries[i]; "
            "index[category] lists the product ids searched (first view of each)"
        ),
    }
    atomic_write_json(folder / "manifest.json", readme)


def evaluate_model(
    model_path: str | os.PathLike,
    data_root: str | os.PathLike,
    splits: list[str],
    fmt: str | None = None,
    *,
    candidate_captions: str | os.PathLike | None = None,
    caption_style: str = "description",
    with_captions: bool = True,
    **kwargs,
) -> dict[str, Any]:
    """Evaluate every split. Candidate captions for the CIR variants come from
    ``candidate_captions`` (a JSON file of ``eval captioning``, or of
    ``{product id: caption}``), else from the model's caption head when it has
    one (``caption_style``), else the variants are not run."""
    from unifashion.data.formats import read_split

    model = RetrievalModel.from_pretrained(model_path)
    cache = FeatureCache(model.vision)
    captioner = None
    if candidate_captions is None and with_captions and (Path(model_path) / CAPTION_FOLDER).is_dir():
        from unifashion.models.captioner import Captioner

        captioner = Captioner.from_pretrained(Path(model_path) / CAPTION_FOLDER)
    results = {}
    for split in splits:
        data = read_split(data_root, split, fmt)
        captions, source = None, None
        if candidate_captions is not None:
            captions, source = (
                read_candidate_captions(candidate_captions, split, caption_style),
                str(candidate_captions),
            )
        elif captioner is not None and data.triplets:
            captions = generate_candidate_captions(
                model, captioner, data, cache, caption_style, bf16=kwargs.get("bf16", True)
            )
            source = f"generated by the model ({caption_style})"
        results[split] = evaluate_split(model, data, cache, candidate_captions=captions, **kwargs)
        if source and "variants" in results[split]["cir"]:
            results[split]["cir"]["variants"]["captions"] = source
    return {"model": str(model_path), "data": str(data_root), "splits": results}


def generate_candidate_captions(
    model: RetrievalModel, captioner, data: DatasetSplit, cache: FeatureCache, style: str, *, bf16: bool = True
) -> dict[str, str]:
    """The pre-generated candidate library: one caption per product of the split (its first view)."""
    from unifashion.pipelines.captioning import generate_captions, image_queries

    refs = tuple(p.images[0] for p in data.products)
    table = image_queries(model, list(refs), cache, bf16=bf16)
    captions = generate_captions(captioner, table.batch(table.rows(refs)), style, bf16=bf16)
    return {p.id: c for p, c in zip(data.products, captions, strict=True)}


def read_candidate_captions(path: str | os.PathLike, split: str, style: str) -> dict[str, str]:
    """``{product id: caption}`` from a JSON file: either that mapping, or the output of
    ``unifashion eval captioning`` (its ``generated`` captions of ``style`` for ``split``)."""
    from unifashion.utils.errors import ConfigError

    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read candidate captions ({exc})") from None
    if isinstance(obj, dict) and "splits" in obj:
        try:
            obj = obj["splits"][split]["styles"][style]["generated"]
        except (KeyError, TypeError):
            raise ConfigError(f"{path}: has no generated {style!r} captions for split {split!r}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in obj.items()):
        raise ConfigError(f"{path}: expected an object mapping product ids to captions")
    return obj


def save_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_json(path, json.loads(json.dumps(obj)))
