"""Rank fusion: the arithmetic on tiny examples, and deterministic ties."""

from __future__ import annotations

import pytest

from rag.retrieve.fusion import candidate_depth, convex, fuse_hybrid, rrf


def test_rrf_math_by_hand() -> None:
    dense = [(1, 0.9), (2, 0.8), (3, 0.1)]
    lexical = [(3, 12.0), (1, 7.0)]
    fused = rrf([dense, lexical], k=10, c=60)
    assert [i for i, _ in fused] == [1, 3, 2]
    scores = dict(fused)
    assert scores[1] == pytest.approx(1 / 61 + 1 / 62)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[2] == pytest.approx(1 / 62)
    assert rrf([dense, lexical], k=2) == fused[:2]


def test_rrf_ignores_scores_and_weights_apply() -> None:
    a = [(1, 1000.0), (2, -5.0)]
    b = [(2, 0.001), (1, 0.0)]
    assert rrf([a, b], k=2, c=0, weights=[2.0, 1.0]) == [(1, 2.5), (2, 2.0)]


def test_rrf_ties_are_deterministic() -> None:
    # 1 and 2 swap places between the lists: equal fused scores, equal best rank -> smaller id first
    a = [(2, 0.0), (1, 0.0)]
    b = [(1, 0.0), (2, 0.0)]
    assert [i for i, _ in rrf([a, b], k=2)] == [1, 2]
    assert [i for i, _ in rrf([b, a], k=2)] == [1, 2]
    # 5 and 4 tie on score, but 5 was ranked first somewhere and 4 only second -> 5 before 4
    fused = rrf([[(5, 0.0)], [(9, 0.0), (4, 0.0)]], k=3, c=0, weights=[1.0, 2.0])
    assert fused == [(9, 2.0), (5, 1.0), (4, 1.0)]


def test_rrf_counts_a_repeated_id_once_and_handles_empties() -> None:
    assert rrf([[(1, 0.0), (1, 0.0), (2, 0.0)]], k=5, c=0) == [(1, 1.0), (2, 1 / 3)]
    assert rrf([[], []], k=5) == []
    assert rrf([[(1, 0.0)]], k=0) == []
    with pytest.raises(ValueError):
        rrf([[(1, 0.0)]], k=1, weights=[1.0, 2.0])


def test_convex_math_by_hand() -> None:
    dense = [(1, 0.9), (2, 0.5), (3, 0.1)]  # normalised: 1 -> 1, 2 -> .5, 3 -> 0
    lexical = [(3, 10.0), (4, 5.0), (1, 0.0)]  # normalised: 3 -> 1, 4 -> .5, 1 -> 0
    fused = convex([dense, lexical], k=4, weights=[0.5, 0.5])
    assert fused == [(1, 0.5), (3, 0.5), (2, 0.25), (4, 0.25)]  # ties: best rank, then id
    tilted = convex([dense, lexical], k=4, weights=[0.3, 0.7])
    assert [i for i, _ in tilted] == [3, 4, 1, 2]
    assert dict(tilted)[3] == pytest.approx(0.7)
    assert convex([[(7, 2.0), (8, 2.0)]], k=2) == [(7, 1.0), (8, 1.0)]  # flat list: all count 1


def test_fuse_hybrid_dispatch() -> None:
    dense = [(1, 0.9), (2, 0.5)]
    lexical = [(2, 3.0), (3, 1.0)]
    assert fuse_hybrid(dense, lexical, 3, method="convex", dense_weight=0.5) == convex(
        [dense, lexical], 3, weights=[0.5, 0.5]
    )
    assert fuse_hybrid(dense, lexical, 3, method="rrf", dense_weight=0.5) == rrf(
        [dense, lexical], 3, weights=[0.5, 0.5]
    )
    assert fuse_hybrid(dense, lexical, 3, dense_weight=1.0)[0][0] == 1
    assert fuse_hybrid(dense, lexical, 3, dense_weight=0.0)[0][0] == 2
    with pytest.raises(ValueError):
        fuse_hybrid(dense, lexical, 3, method="borda")
    with pytest.raises(ValueError):
        fuse_hybrid(dense, lexical, 3, dense_weight=1.5)
    assert candidate_depth(5) == 50 and candidate_depth(80) == 80
