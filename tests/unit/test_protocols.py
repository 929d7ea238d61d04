"""Retrieval protocols pinned on hand-computed similarity matrices."""

import numpy as np
import pytest

from unifashion.evaluation import protocols as P


def test_ranks_and_recalls_by_hand():
    scores = np.array(
        [
            [0.9, 0.1, 0.5],  # target 0 is best -> rank 1
            [0.9, 0.1, 0.5],  # target 2: beaten by 0.9 -> rank 2
            [0.2, 0.3, 0.1],  # target 2: beaten by both -> rank 3
        ]
    )
    positives = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]], bool)
    ranks = P.target_ranks(scores, positives)
    assert ranks.tolist() == [1, 2, 3]
    assert P.recall_at_k(ranks, (1, 2, 3)) == {
        "R@1": pytest.approx(100 / 3),
        "R@2": pytest.approx(200 / 3),
        "R@3": 100.0,
    }


def test_ties_count_against_the_target():
    scores = np.array([[0.5, 0.5, 0.5], [0.7, 0.7, 0.1]])
    positives = np.array([[0, 1, 0], [1, 0, 0]], bool)
    # Row 0: two negatives tie with the target -> rank 3. Row 1: one tie -> rank 2.
    assert P.target_ranks(scores, positives).tolist() == [3, 2]
    # A constant scorer never gets a lucky R@1.
    const = np.zeros((4, 10))
    pos = np.eye(4, 10, dtype=bool)
    assert P.recall_at_k(P.target_ranks(const, pos), (1,))["R@1"] == 0.0


def test_several_positives_rank_by_the_best_one():
    scores = np.array([[0.1, 0.8, 0.9, 0.3]])
    positives = np.array([[1, 1, 0, 0]], bool)  # two views of the product
    assert P.target_ranks(scores, positives).tolist() == [2]  # 0.8 is beaten only by 0.9


def test_a_query_without_positive_is_an_error():
    with pytest.raises(ValueError, match="query 1 has no positive"):
        P.target_ranks(np.zeros((2, 3)), np.array([[1, 0, 0], [0, 0, 0]], bool))


def test_one_target_assertion():
    P.assert_one_target(np.array([[0, 1], [1, 0]], bool))
    with pytest.raises(ValueError, match="query 0 has 2 true matches"):
        P.assert_one_target(np.array([[1, 1], [1, 0]], bool))
    with pytest.raises(ValueError, match="query 1 has 0 true matches"):
        P.assert_one_target(np.array([[0, 1], [0, 0]], bool))


def test_random_candidates_follow_the_protocol():
    groups = ["dress"] * 150 + ["shirt"] * 60
    cand, topped = P.random_candidates(groups, n=100, seed=3)
    assert cand.shape == (210, 100)
    for i, row in enumerate(cand):
        assert len(set(row.tolist())) == 100 and (row == i).sum() == 1
        if groups[i] == "dress":  # enough dresses: all candidates are dresses
            assert all(groups[j] == "dress" for j in row)
        else:  # 59 other shirts, topped up with 40 dresses
            assert sum(groups[j] == "shirt" for j in row) == 60
    assert topped == 60
    again, _ = P.random_candidates(groups, n=100, seed=3)
    assert np.array_equal(cand, again)
    other, _ = P.random_candidates(groups, n=100, seed=4)
    assert not np.array_equal(cand, other)
    with pytest.raises(ValueError, match="at least 100 items"):
        P.random_candidates(["a"] * 50)


def test_random100_ranks_by_hand():
    # 3 queries over 4 items; candidate sets of 3.
    sim = np.array([[0.9, 0.2, 0.3, 0.1], [0.5, 0.4, 0.6, 0.0], [0.1, 0.1, 0.1, 0.2]])
    cand = np.array([[0, 1, 2], [1, 2, 3], [3, 0, 2]])
    truth = np.array([0, 1, 2])
    assert P.random100_ranks(sim, cand, truth).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="true matches"):
        P.random100_ranks(sim, np.array([[1, 2, 3], [1, 2, 3], [3, 0, 2]]), truth)


def test_fashioniq_recalls_and_average():
    rng = np.random.default_rng(0)
    scores = rng.random((4, 60))
    target = np.array([0, 1, 2, 3])
    scores[0, 0] = 2.0  # rank 1
    scores[1, 1] = -1.0  # rank 60
    scores[2] = np.linspace(1, 0, 60)  # column 2 is third best... then make target rank exactly 12
    scores[2, 2] = scores[2, 11] - 1e-9  # 11 better + itself -> rank 12
    scores[3, :] = 0.5  # all tied -> rank 60
    r = P.fashioniq_recalls(scores, target)
    assert r == {"R@10": 25.0, "R@50": 50.0, "avg": 37.5}
    avg = P.average_over_categories({"dress": r, "shirt": {"R@10": 75.0, "R@50": 100.0, "avg": 87.5}})
    assert avg == {"R@10": 50.0, "R@50": 75.0, "avg": 62.5}


def test_rerank_top_k_reorders_only_the_top():
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    seen = []

    def rescore(q, c):
        seen.append((q.tolist(), c.tolist()))
        return np.array([0.0, 1.0, 0.5])  # prefers the second-ranked candidate

    out = P.rerank_top_k(scores, 3, rescore)
    assert np.argsort(-out[0]).tolist() == [1, 2, 0, 3]
    assert seen == [([0, 0, 0], [0, 1, 2])]


def test_candidate_lists_are_read_per_direction_and_every_fault_is_named(tmp_path):
    import json

    from unifashion.utils.errors import DataError

    ids = ["a", "b", "c", "d"]
    path = tmp_path / "lists.jsonl"
    path.write_text(
        json.dumps({"query": "a", "candidates": ["b", "a", "c"]})
        + "\n\n"
        + json.dumps({"query": "d", "candidates": ["d", "c", "b"], "direction": "t2i"})
        + "\n"
    )
    lists = P.read_candidate_lists(path, ids)
    assert lists["i2t"][0].tolist() == [0] and lists["i2t"][1].tolist() == [[1, 0, 2]]
    assert lists["t2i"][0].tolist() == [0, 3] and lists["t2i"][1].tolist() == [[1, 0, 2], [3, 2, 1]]
    # Ranks with these lists: item i's text is most similar to image i, except b's text to a's image.
    sim = np.eye(4)
    sim[1, 0] = 2.0
    assert P.random100_ranks(sim[lists["t2i"][0]], lists["t2i"][1], lists["t2i"][0]).tolist() == [1, 1]
    assert P.random100_ranks(sim.T[lists["i2t"][0]], lists["i2t"][1], lists["i2t"][0]).tolist() == [2]
    for line, message in (
        ("not json", r"lists.jsonl \[line 1\]: not JSON"),
        (json.dumps({"query": "a"}), r"\[line 1\]: expected \{\"query\""),
        (json.dumps({"query": "a", "candidates": ["a", "z"]}), r"\[line 1\]: 'z' is not a captioned product"),
        (json.dumps({"query": "a", "candidates": ["a", "a"]}), r"holds? the query 'a' 2 times"),
        (json.dumps({"query": "a", "candidates": ["a"], "direction": "x2y"}), r"direction 'x2y'; expected one of"),
    ):
        path.write_text(line + "\n")
        with pytest.raises(DataError, match=message):
            P.read_candidate_lists(path, ids)
    path.write_text(
        json.dumps({"query": "a", "candidates": ["a", "b"]}) + "\n" + json.dumps({"query": "b", "candidates": ["b"]})
    )
    with pytest.raises(DataError, match=r"\[line 2\]: 1 candidates where the lines before have 2"):
        P.read_candidate_lists(path, ids)
    path.write_text("\n")
    with pytest.raises(DataError, match="no candidate lists in the file"):
        P.read_candidate_lists(path, ids)
