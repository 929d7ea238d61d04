"""Retrieval protocols as small pure functions over similarity matrices.

Conventions, shared by every protocol:

- ``scores`` (Q, N): higher is more similar; ``positives`` (Q, N) bool marks
  the true matches of each query.
- A query's rank is that of its best-scored positive, and **ties count
  against it**: rank = 1 + the number of non-positive candidates scoring at
  least as high. A model that scores everything equally gets R@1 = 0, never a
  lucky 100.
- Recall@K is the percentage of queries ranked within the top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unifashion.utils.errors import DataError


def target_ranks(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """1-based rank of each query's best positive (ties count against it). (Q,) int."""
    scores = np.asarray(scores, dtype=np.float64)
    positives = np.asarray(positives, dtype=bool)
    if scores.shape != positives.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and positives {positives.shape} must be the same (Q, N) shape")
    empty = np.flatnonzero(~positives.any(axis=1))
    if empty.size:
        raise ValueError(f"query {int(empty[0])} has no positive among its candidates")
    best = np.where(positives, scores, -np.inf).max(axis=1)
    beaten_or_tied = (scores >= best[:, None]) & ~positives
    return 1 + beaten_or_tied.sum(axis=1)


def recall_at_k(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """{"R@k": percentage of ranks <= k} for each k."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no queries to score")
    return {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}


def assert_one_target(positives: np.ndarray) -> None:
    """Raise unless every query has exactly one positive among its candidates."""
    counts = np.asarray(positives, dtype=bool).sum(axis=1)
    bad = np.flatnonzero(counts != 1)
    if bad.size:
        q = int(bad[0])
        raise ValueError(
            f"query {q} has {int(counts[q])} true matches among its candidates; the protocol needs exactly one"
        )


def random_candidates(
    groups: Sequence[str], n: int = 100, seed: int = 0, queries: Sequence[int] | None = None
) -> tuple[np.ndarray, int]:
    """The random-100 protocol's candidate sets.

    For each query item ``i`` (every item, or those in ``queries``), ``n``
    candidate items: ``i`` itself (the true match) and ``n - 1`` others drawn
    without replacement from the items of the same group (category), topped up
    from other groups when the group is too small. Returns (candidates (Q, n)
    item indices with the true match at a random position, number of queries
    that needed topping up). Deterministic for a seed.
    """
    groups = list(groups)
    if len(groups) < n:
        raise ValueError(f"the protocol needs at least {n} items, the split has {len(groups)}")
    rng = np.random.default_rng(seed)
    by_group: dict[str, np.ndarray] = {}
    for g in sorted(set(groups)):
        by_group[g] = np.array([i for i, x in enumerate(groups) if x == g])
    everyone = np.arange(len(groups))
    rows, topped = [], 0
    for i in range(len(groups)) if queries is None else queries:
        same = by_group[groups[i]]
        same = same[same != i]
        if same.size >= n - 1:
            negatives = rng.choice(same, size=n - 1, replace=False)
        else:
            topped += 1
            others = np.setdiff1d(everyone, np.append(same, i))
            negatives = np.concatenate([same, rng.choice(others, size=n - 1 - same.size, replace=False)])
        row = np.append(negatives, i)
        rng.shuffle(row)
        rows.append(row)
    return np.stack(rows), topped


def random100_ranks(similarity: np.ndarray, candidates: np.ndarray, query_items: np.ndarray) -> np.ndarray:
    """Ranks under the random-100 protocol.

    ``similarity`` (Q, M): query q against every item; ``candidates`` (Q, n)
    item indices; ``query_items`` (Q,) the item that is q's true match.
    """
    scores = np.take_along_axis(np.asarray(similarity), candidates, axis=1)
    positives = candidates == np.asarray(query_items)[:, None]
    assert_one_target(positives)
    return target_ranks(scores, positives)


def fashioniq_recalls(scores: np.ndarray, target_index: np.ndarray, ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """Fashion-IQ's R@10/R@50 for one category: ``scores`` (Q, N) over the
    category's whole image index (the reference image included, as in the
    standard protocol), ``target_index`` (Q,) the target's column."""
    target_index = np.asarray(target_index)
    positives = np.zeros(np.shape(scores), dtype=bool)
    positives[np.arange(len(target_index)), target_index] = True
    assert_one_target(positives)
    out = recall_at_k(target_ranks(scores, positives), ks)
    out["avg"] = float(np.mean([out[f"R@{k}"] for k in ks]))
    return out


def average_over_categories(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the categories (Fashion-IQ's 'Average' columns)."""
    if not per_category:
        raise ValueError("no categories to average")
    keys = next(iter(per_category.values())).keys()
    return {k: float(np.mean([m[k] for m in per_category.values()])) for k in keys}


def rerank_top_k(scores: np.ndarray, k: int, rescore_pairs) -> np.ndarray:
    """Re-order each query's top ``k`` candidates by ``rescore_pairs(query_idx,
    candidate_idx) -> scores`` (called once with every (query, candidate) pair,
    so it can batch); the top ``k`` stay above all other candidates."""
    scores = np.asarray(scores, dtype=np.float64)
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (Q, k)
    rows = np.repeat(np.arange(scores.shape[0]), k)
    new = np.asarray(rescore_pairs(rows, top.ravel()), dtype=np.float64).reshape(top.shape)
    out = scores.copy()
    out[rows.reshape(top.shape), top] = scores.max() + 1.0 + (new - new.min())
    return out


DIRECTIONS = ("i2t", "t2i")


def read_candidate_lists(path, item_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixed random-100 candidate lists from a JSON-lines file, one query per line::

        {"query": "<product id>", "candidates": ["<product id>", ...], "direction": "i2t" | "t2i"}

    ``candidates`` holds the query's own product once (its true match) and the negatives;
    without ``direction`` a line serves both directions. Returns, per direction that has lines,
    (query item indices (Q,), candidate item indices (Q, n)) over ``item_ids``. Every error
    names the file and line: an id not in ``item_ids``, a list without its query or with it
    twice, lists of different lengths."""
    import json
    from pathlib import Path

    index = {pid: i for i, pid in enumerate(item_ids)}
    rows: dict[str, list[tuple[int, list[int]]]] = {d: [] for d in DIRECTIONS}
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read the candidate lists ({exc})", path=str(path)) from exc
    width = None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = {"path": str(path), "item": f"line {n}"}
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON ({exc.msg})", **where) from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("candidates"), list) or "query" not in obj:
            raise DataError('expected {"query": id, "candidates": [ids], optional "direction"}', **where)
        query, cands = str(obj["query"]), [str(c) for c in obj["candidates"]]
        unknown = [x for x in (query, *cands) if x not in index]
        if unknown:
            raise DataError(f"{unknown[0]!r} is not a captioned product of the evaluated split", **where)
        if cands.count(query) != 1:
            raise DataError(f"the candidates hold the query {query!r} {cands.count(query)} times (need 1)", **where)
        if width is None:
            width = len(cands)
        elif len(cands) != width:
            raise DataError(f"{len(cands)} candidates where the lines before have {width}", **where)
        direction = obj.get("direction")
        if direction is not None and direction not in DIRECTIONS:
            raise DataError(f"direction {direction!r}; expected one of {', '.join(DIRECTIONS)}", **where)
        for d in (direction,) if direction else DIRECTIONS:
            rows[d].append((index[query], [index[c] for c in cands]))
    if width is None:
        raise DataError("no candidate lists in the file", path=str(path))
    return {d: (np.array([q for q, _ in r]), np.array([c for _, c in r], dtype=np.int64)) for d, r in rows.items() if r}
