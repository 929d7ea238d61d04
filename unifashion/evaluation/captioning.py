"""``unifashion eval captioning``: caption metrics, attribute accuracy, and a nearest-neighbour baseline.

For every product of a split (its first view) the caption head writes one
caption per style; the references are the product's captions of that style.

- BLEU-1..4, METEOR, ROUGE-L and CIDEr (CIDEr-D) through pycocoevalcap, on its
  PTB tokenisation, x100 as papers print them. METEOR and the PTB tokenizer
  run on Java; without Java, METEOR is reported as skipped and a Python
  tokenizer that lower-cases and drops the same punctuation stands in. SPICE
  needs a download (Stanford CoreNLP models) and is not computed.
- Attribute accuracy where the data labels attributes (FashionSynth): the
  share of ground-truth attributes a caption states correctly / wrongly /
  not at all (:mod:`unifashion.evaluation.attributes`).
- Baseline in the same run: nearest-neighbour captioning, the caption (same
  style) of the training product whose image is closest under the retrieval
  embedding.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import shutil
import threading
import time
from typing import Any

import torch
import torch.nn.functional as F

from unifashion.backbones.feature_cache import FeatureCache
from unifashion.data.captions import style_texts
from unifashion.data.records import DatasetSplit
from unifashion.evaluation.attributes import attribute_scores
from unifashion.models.captioner import Captioner, Decoding
from unifashion.models.retrieval import RetrievalModel
from unifashion.pipelines.captioning import CAPTION_BATCH, generate_captions, load_captioning_model
from unifashion.pipelines.retrieval import image_queries

SPICE_SKIPPED = "not computed: SPICE needs the Stanford CoreNLP models, a download this offline set-up does not make"
# PTBTokenizer's punctuation list (pycocoevalcap/tokenizer/ptbtokenizer.py), for the no-Java fallback.
_PUNCTUATION = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}


def java_available() -> bool:
    return shutil.which("java") is not None


def _python_tokenize(text: str) -> str:
    tokens = re.findall(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*|[^\sA-Za-z0-9]", text.lower())
    return " ".join(t for t in tokens if t not in _PUNCTUATION)


_meteor: Any = None  # the METEOR process this Python process scores with (see meteor_scores)
_meteor_lock = threading.Lock()


def meteor_scores(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, list[float]]:
    """pycocoevalcap's METEOR (corpus score, per-item scores) of tokenised ``res`` against ``gts``.

    One METEOR process serves every call of this Python process: starting one (Java, then its
    paraphrase tables) took 9 s on 2 cores, scoring 200 captions 0.5 s, and an evaluation scores
    six sets (model and nearest neighbour, per style and split). Each call sends its own items
    and reads back their scores, so a call's figures do not depend on the calls before it. After
    a failure the process is stopped and the next call starts a fresh one."""
    global _meteor
    from pycocoevalcap.meteor.meteor import Meteor

    with _meteor_lock:
        if _meteor is None or _meteor.meteor_p.poll() is not None:
            _meteor = Meteor()
        try:
            return _meteor.compute_score(gts, res)
        except BaseException:
            _stop_meteor()
            raise


@atexit.register
def _stop_meteor() -> None:
    global _meteor
    if _meteor is not None:
        with contextlib.suppress(Exception):
            if _meteor.lock.locked():  # left held by a call that failed; its __del__ takes it again
                _meteor.lock.release()
            _meteor.meteor_p.kill()
            _meteor.meteor_p.wait(timeout=10)
        _meteor = None


def coco_caption_scores(
    references: dict[str, list[str]], candidates: dict[str, str], *, per_item: bool = False
) -> dict[str, Any]:
    """Corpus-level caption metrics (x100) of ``candidates`` against ``references``, keyed alike.
    With ``per_item``, also ``per_item[id]``: each item's own BLEU-4, METEOR, ROUGE-L and CIDEr
    as pycocoevalcap scores it (CIDEr's idf still comes from the whole corpus)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(references) != set(candidates):
        missing = sorted(set(references) ^ set(candidates))[:3]
        raise ValueError(f"references and candidates must have the same ids (differ at {missing})")
    if not references:
        raise ValueError("no captions to score")
    for key, refs in references.items():
        if not refs:
            raise ValueError(f"item {key!r}: no reference caption")
    java = java_available()
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        with contextlib.redirect_stdout(io.StringIO()):
            gts = tokenizer.tokenize({k: [{"caption": r} for r in v] for k, v in references.items()})
            res = tokenizer.tokenize({k: [{"caption": candidates[k]}] for k in references})
    else:
        gts = {k: [_python_tokenize(r) for r in v] for k, v in references.items()}
        res = {k: [_python_tokenize(candidates[k])] for k in references}
    # An empty caption scores zero; BLEU's and METEOR's code need at least one token.
    res = {k: [v[0] if v[0].strip() else "<empty>"] for k, v in res.items()}
    out: dict[str, Any] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # BLEU prints its n-gram counts
        bleu, bleu_items = Bleu(4).compute_score(gts, res)
        rouge, rouge_items = Rouge().compute_score(gts, res)
        cider, cider_items = Cider().compute_score(gts, res)
    items = {"BLEU-4": bleu_items[3], "ROUGE-L": rouge_items, "CIDEr": cider_items}
    for n, value in enumerate(bleu, start=1):
        out[f"BLEU-{n}"] = 100.0 * float(value)
    if java:
        value, items["METEOR"] = meteor_scores(gts, res)
        out["METEOR"] = 100.0 * float(value)
    else:
        out["METEOR"] = None
        out["METEOR_skipped"] = "Java is not installed (METEOR runs on Java)"
    out["ROUGE-L"] = 100.0 * float(rouge)
    out["CIDEr"] = 100.0 * float(cider)
    out["SPICE"] = None
    out["SPICE_skipped"] = SPICE_SKIPPED
    out["tokenizer"] = "PTBTokenizer (Java)" if java else "python (Java missing)"
    out["items"] = len(references)
    if per_item:  # every scorer lists its items in the order of gts's keys
        out["per_item"] = {
            key: {name: 100.0 * float(values[i]) for name, values in items.items()} for i, key in enumerate(gts)
        }
    return out


def image_vectors(model: RetrievalModel, queries: torch.Tensor) -> torch.Tensor:
    """The retrieval embedding of each image as one vector (N, e): the normalised
    mean of its normalised query projections (as the image-only baseline of CIR)."""
    with torch.no_grad():
        proj = F.normalize(model.qformer.vision_proj(queries.float()), dim=-1)
        return F.normalize(proj.mean(dim=1), dim=-1)


def nearest_neighbour_captions(
    model: RetrievalModel, query: torch.Tensor, train: torch.Tensor, train_texts: list[str], batch_size: int = 512
) -> tuple[list[str], list[int]]:
    """For each row of ``query`` (N, Q, d), the text of the training image (rows of ``train``) closest to it."""
    train_vec = image_vectors(model, train)
    picks: list[int] = []
    for start in range(0, query.shape[0], batch_size):
        sim = image_vectors(model, query[start : start + batch_size]) @ train_vec.t()
        picks += sim.argmax(dim=1).tolist()
    return [train_texts[i] for i in picks], picks


def evaluate_captioning_split(
    model: RetrievalModel,
    captioner: Captioner,
    data: DatasetSplit,
    cache: FeatureCache,
    *,
    styles: tuple[str, ...] = ("description", "title"),
    train: DatasetSplit | None = None,
    decoding: Decoding | None = None,
    batch_size: int = CAPTION_BATCH,
    max_items: int | None = None,
    bf16: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Every captioning metric of one split, per style, beside the nearest-neighbour baseline."""
    started = time.perf_counter()
    products = list(data.products)
    if max_items is not None:
        products = products[:max_items]
    table = image_queries(model, [p.images[0] for p in products], cache, bf16=bf16, progress=progress)
    queries = table.batch(table.rows(tuple(p.images[0] for p in products)))  # (P, Q, d)
    train_side = None
    if train is not None:
        train_products = [p for p in train.products if p.images]
        ttable = image_queries(model, [p.images[0] for p in train_products], cache, bf16=bf16, progress=progress)
        train_side = (train_products, ttable.batch(ttable.rows(tuple(p.images[0] for p in train_products))))
    out: dict[str, Any] = {"split": data.split, "products": len(products), "styles": {}}
    for style in styles:
        keep = [i for i, p in enumerate(products) if style_texts(p, style)]
        if not keep:
            out["styles"][style] = {"skipped": f"no product of the split has a {style} caption"}
            continue
        t0 = time.perf_counter()
        captions = generate_captions(
            captioner, queries[keep], style, decoding, batch_size=batch_size, bf16=bf16, progress=progress
        )
        seconds = time.perf_counter() - t0
        ids = [products[i].id for i in keep]
        refs = {pid: style_texts(products[i], style) for pid, i in zip(ids, keep, strict=True)}
        result: dict[str, Any] = {
            "items": len(keep),
            "seconds_per_caption": round(seconds / len(keep), 4),
            "model": coco_caption_scores(refs, dict(zip(ids, captions, strict=True))),
        }
        truths = [products[i].attributes for i in keep]
        labelled = all(truths)
        if labelled:
            result["model"]["attributes"] = attribute_scores(truths, captions)
        if train_side is not None:
            train_products, train_queries = train_side
            with_text = [j for j, p in enumerate(train_products) if style_texts(p, style)]
            if with_text:
                texts = [style_texts(train_products[j], style)[0] for j in with_text]
                nn_captions, _ = nearest_neighbour_captions(model, queries[keep], train_queries[with_text], texts)
                result["nearest_neighbour"] = coco_caption_scores(refs, dict(zip(ids, nn_captions, strict=True)))
                if labelled:
                    result["nearest_neighbour"]["attributes"] = attribute_scores(truths, nn_captions)
            else:
                result["nearest_neighbour"] = {"skipped": f"the training split has no {style} captions"}
        result["generated"] = dict(zip(ids, captions, strict=True))
        result["samples"] = [
            {"id": pid, "image": str(products[i].images[0]), "caption": c, "references": refs[pid]}
            for pid, i, c in list(zip(ids, keep, captions, strict=True))[:12]
        ]
        out["styles"][style] = result
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def evaluate_captioning(
    model_path: str | os.PathLike,
    data_root: str | os.PathLike,
    splits: list[str],
    fmt: str | None = None,
    *,
    baseline_split: str | None = "train",
    split_styles: dict[str, tuple[str, ...]] | None = None,
    **kwargs,
) -> dict[str, Any]:
    """Every captioning metric of each split; ``split_styles`` names other styles for some splits
    than ``styles`` (e.g. only descriptions on ``novel``)."""
    from unifashion.data.formats import list_splits, read_split

    model, captioner = load_captioning_model(model_path)
    cache = FeatureCache(model.vision)
    train = None
    skipped = None
    if baseline_split:
        if baseline_split in list_splits(data_root, fmt):
            train = read_split(data_root, baseline_split, fmt)
        else:
            skipped = f"the data has no {baseline_split!r} split to take neighbours from"
    results = {}
    for split in splits:
        styles = (split_styles or {}).get(split)
        extra = {"styles": styles} if styles else {}
        results[split] = evaluate_captioning_split(
            model, captioner, read_split(data_root, split, fmt), cache, train=train, **{**kwargs, **extra}
        )
        if skipped:
            results[split]["nearest_neighbour_skipped"] = skipped
    return {"model": str(model_path), "data": str(data_root), "splits": results}
