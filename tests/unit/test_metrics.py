"""Unit tests of the paper's metrics: small cases whose answers can be checked by eye in the comments.

Tie rule under test everywhere: equal scores rank in favour of the lower index (a stable descending sort).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shared.errors import InvalidInput
from shared.training.metrics import (
    attribute_topk_recall,
    flatten_metrics,
    landmark_errors,
    retrieval_topk,
    topk_accuracy,
    visibility_accuracy,
)
from shared.vocabulary import VIS_ABSENT, VIS_OCCLUDED, VIS_TRUNCATED, VIS_VISIBLE

# ----------------------------------------------------------------------------------------------- category


def test_topk_accuracy_hand_computed() -> None:
    logits = np.array(
        [
            [0.1, 0.5, 0.3, 0.9, 0.2],  # label 2: order 3, 1, 2, ... -> rank 3 (1-based): top-3 hit, top-1 miss
            [0.9, 0.1, 0.2, 0.3, 0.4],  # label 1: lowest score -> rank 5: top-3 miss, top-5 hit
            [0.2, 0.8, 0.1, 0.0, 0.3],  # label 1: highest score -> rank 1: hit everywhere
        ]
    )
    labels = np.array([2, 1, 1])
    assert topk_accuracy(logits, labels, ks=(1, 3, 5)) == pytest.approx({1: 1 / 3, 3: 2 / 3, 5: 1.0})


def test_topk_accuracy_default_ks_and_plain_floats() -> None:
    result = topk_accuracy(np.array([[0.1, 0.5, 0.3, 0.9, 0.2]]), np.array([2]))  # rank 3 of 5
    assert result == {3: 1.0, 5: 1.0}
    assert all(type(v) is float for v in result.values())
    json.dumps(result)  # JSON-serialisable as it is


def test_topk_accuracy_ignores_negative_labels() -> None:
    logits = np.array([[0.9, 0.1, 0.0], [0.0, 0.1, 0.9]])
    # Sample 0 (label 0, top-1 hit) counts; sample 1 is unlabelled (-1) and would be a miss if counted.
    assert topk_accuracy(logits, np.array([0, -1]), ks=(1,)) == {1: 1.0}


def test_topk_accuracy_ties_go_to_lower_class_index() -> None:
    logits = np.ones((2, 5))  # every class tied: the order is simply 0, 1, 2, 3, 4
    # Label 2 sits at rank 3 -> inside top-3; label 3 sits at rank 4 -> outside top-3, inside top-4.
    assert topk_accuracy(logits, np.array([2, 3]), ks=(3, 4)) == {3: 0.5, 4: 1.0}


def test_topk_accuracy_matches_stable_sort_reference_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, size=(200, 10)).astype(np.float64)  # only four distinct values: many ties
    labels = rng.integers(-1, 10, size=200)
    order = np.argsort(-logits, kind="stable", axis=1)
    keep = labels >= 0
    rank = np.argmax(order[keep] == labels[keep, None], axis=1)
    expected = {k: float(np.mean(rank < k)) for k in (1, 3, 5)}
    assert topk_accuracy(logits, labels, ks=(1, 3, 5)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((3, 5)), np.array([0, 1]), "expected 3 rows"),
        (np.zeros((0, 5)), np.zeros(0, dtype=int), "expected at least one"),
        (np.zeros(5), np.array([0]), "expected shape (N, num_classes)"),
        (np.zeros((2, 5)), np.array([0, 5]), "expected values < 5"),
        (np.zeros((2, 5)), np.array([-1, -1]), "at least one sample with a label >= 0"),
        (np.zeros((2, 5)), np.array([0.0, 1.0]), "expected integers"),
        (np.array([[0.0, np.nan]]), np.array([0]), "expected no NaN"),
    ],
)
def test_topk_accuracy_rejects_bad_input(logits: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        topk_accuracy(logits, labels)


def test_topk_accuracy_rejects_bad_ks() -> None:
    with pytest.raises(InvalidInput, match="positive integers"):
        topk_accuracy(np.zeros((1, 3)), np.array([0]), ks=(0,))


# ----------------------------------------------------------------------------------------------- attributes

# Seven attributes: 0-2 texture, 3-5 fabric, 6 shape (never positive).
GROUPS = ["texture", "texture", "texture", "fabric", "fabric", "fabric", "shape"]
SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.0],  # image A
        [0.1, 0.2, 0.3, 0.6, 0.5, 0.4, 0.0],  # image B
    ]
)
TARGETS = np.array(
    [
        [0, 1, 0, 0, 1, 0, 0],  # A: attribute 1 (texture) and 4 (fabric)
        [1, 0, 0, 0, 0, 0, 0],  # B: attribute 0 (texture)
    ]
)


def test_attribute_recall_per_group_ranking_differs_from_global() -> None:
    result = attribute_topk_recall(SCORES, TARGETS, GROUPS, ks=(1, 2))
    # "all", ranking all seven attributes per image:
    #   A top-1 {0}, top-2 {0, 1} -> attribute 1 hit at k=2; attribute 4 is 5th overall -> miss.
    #   B top-1 {3}, top-2 {3, 4} -> attribute 0 missed.
    #   3 positives, 0 hits at k=1, 1 hit at k=2 -> 0 and 1/3 (pooled; a per-image mean would give 0.25).
    assert result["all"] == pytest.approx({1: 0.0, 2: 1 / 3})
    # texture, ranking attributes 0-2 only: A top-2 {0, 1} hits 1; B top-2 {2, 1} misses 0 -> 1/2 at k=2.
    assert result["texture"] == pytest.approx({1: 0.0, 2: 0.5})
    # fabric, ranking attributes 3-5 only: A top-2 {3, 4} hits attribute 4, which the global top-2 missed.
    # B has no fabric positive and adds nothing -> 1/1.
    assert result["fabric"] == pytest.approx({1: 0.0, 2: 1.0})
    # shape has no positive anywhere: absent, not 0; groups come in ATTRIBUTE_GROUPS order after "all".
    assert list(result) == ["all", "texture", "fabric"]


def test_attribute_recall_image_without_positives_changes_nothing() -> None:
    scores = np.vstack([SCORES, [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]])
    targets = np.vstack([TARGETS, np.zeros((1, 7), dtype=int)])
    expected = attribute_topk_recall(SCORES, TARGETS, GROUPS, ks=(1, 2))
    assert attribute_topk_recall(scores, targets, GROUPS, ks=(1, 2)) == expected


def test_attribute_recall_ties_go_to_lower_attribute_index() -> None:
    scores = np.zeros((1, 4))  # all tied: top-2 is attributes {0, 1}
    targets = np.array([[1, 0, 0, 1]])  # attribute 0 is in, attribute 3 is out -> 1/2
    assert attribute_topk_recall(scores, targets, ["part"] * 4, ks=(2,)) == {"all": {2: 0.5}, "part": {2: 0.5}}


def test_attribute_recall_k_beyond_group_size_takes_whole_group() -> None:
    # The texture group has 3 attributes, so its top-5 is the whole group: every texture positive is a hit.
    result = attribute_topk_recall(SCORES, TARGETS, GROUPS, ks=(5,))
    assert result["texture"] == {5: 1.0}
    # Globally B's attribute 0 ranks 6th of 7 (only attribute 6 is lower) -> miss; A's 1 and 4 ranks 2 and 5.
    assert result["all"] == pytest.approx({5: 2 / 3})


def test_attribute_recall_matches_stable_sort_reference() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random((60, 12)), 1)  # one decimal: plenty of ties
    targets = (rng.random((60, 12)) < 0.3).astype(np.uint8)
    groups = ["texture", "fabric", "shape", "part"] * 3
    result = attribute_topk_recall(scores, targets, groups, ks=(1, 3, 5))
    for name in ["all", "texture", "fabric", "shape", "part"]:
        cols = np.arange(12) if name == "all" else np.flatnonzero(np.array(groups) == name)
        s, t = scores[:, cols], targets[:, cols].astype(bool)
        order = np.argsort(-s, kind="stable", axis=1)
        for k in (1, 3, 5):
            hits = sum(t[i, order[i, :k]].sum() for i in range(len(s)))
            assert result[name][k] == pytest.approx(hits / t.sum()), (name, k)


@pytest.mark.parametrize(
    ("scores", "targets", "groups", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), ["a"] * 3, "expected shape"),
        (np.zeros((2, 3)), np.zeros((1, 3)), ["a"] * 3, "expected shape"),
        (np.zeros((2, 3)), np.zeros((2, 3)), ["a"] * 2, "one group name per attribute"),
        (np.zeros((2, 3)), np.full((2, 3), -1), ["a"] * 3, "0/1 multi-hot"),
        (np.zeros((2, 3)), np.zeros((2, 3)), ["a", "all", "b"], "reserved"),
        (np.zeros((0, 3)), np.zeros((0, 3)), ["a"] * 3, "at least one"),
    ],
)
def test_attribute_recall_rejects_bad_input(scores, targets, groups, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        attribute_topk_recall(scores, targets, groups)


# ----------------------------------------------------------------------------------------------- landmarks


def _landmark_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two images; visible landmarks have 3-4-5 offsets, every other slot is off by a huge 0.9."""
    target = np.full((2, 8, 2), 0.5)
    pred = target + 0.9  # wrong everywhere unless set below
    vis = np.array(
        [
            [VIS_VISIBLE, VIS_VISIBLE, VIS_OCCLUDED, VIS_TRUNCATED, VIS_ABSENT, VIS_ABSENT, VIS_VISIBLE, VIS_VISIBLE],
            [VIS_VISIBLE] + [VIS_ABSENT] * 7,
        ]
    )
    pred[0, 0] = target[0, 0] + (0.03, 0.04)  # distance 0.05
    pred[0, 1] = target[0, 1] + (0.0, 0.1)  # 0.1
    pred[0, 6] = target[0, 6]  # 0
    pred[0, 7] = target[0, 7] + (0.3, 0.4)  # 0.5
    pred[1, 0] = target[1, 0] - (0.06, 0.08)  # 0.1
    return pred, target, vis


def test_landmark_errors_hand_computed_and_ignores_non_visible() -> None:
    pred, target, vis = _landmark_case()
    result = landmark_errors(pred, target, vis, thresholds=(0.075, 0.2, 1.0))
    # Five visible landmarks with distances 0.05, 0.1, 0, 0.5, 0.1 -> mean 0.75 / 5 = 0.15.
    assert result["count"] == 5
    assert result["ne"] == pytest.approx(0.15)
    # Slot 0: (0.05 + 0.1) / 2; slot 1: 0.1; slots 2-5 have no visible landmark; slot 6: 0; slot 7: 0.5.
    per = result["ne_per_landmark"]
    assert per[0] == pytest.approx(0.075)
    assert per[1] == pytest.approx(0.1)
    assert all(math.isnan(v) for v in per[2:6])
    assert per[6] == pytest.approx(0.0)
    assert per[7] == pytest.approx(0.5)
    # <= 0.075: {0.05, 0}; <= 0.2: all but 0.5; <= 1.0: all.
    assert result["detection_rate"] == pytest.approx({0.075: 0.4, 0.2: 0.8, 1.0: 1.0})


def test_landmark_errors_default_thresholds_and_json() -> None:
    pred, target, vis = _landmark_case()
    result = landmark_errors(pred, target, vis)
    assert list(result["detection_rate"]) == [0.05, 0.1, 0.2]
    assert result["detection_rate"][0.2] == pytest.approx(0.8)
    assert type(result["ne"]) is float and type(result["count"]) is int
    json.dumps(result)


def test_landmark_errors_without_visible_landmarks_is_nan_with_count_zero() -> None:
    pred, target, _ = _landmark_case()
    result = landmark_errors(pred, target, np.full((2, 8), VIS_OCCLUDED))
    assert result["count"] == 0
    assert math.isnan(result["ne"])
    assert all(math.isnan(v) for v in result["ne_per_landmark"])
    assert all(math.isnan(v) for v in result["detection_rate"].values())


def test_landmark_errors_ignores_nan_at_non_visible_slots_but_rejects_it_at_visible_ones() -> None:
    pred, target, vis = _landmark_case()
    target[0, 4] = np.inf  # absent slot: never looked at
    assert landmark_errors(pred, target, vis)["ne"] == pytest.approx(0.15)
    target[0, 0] = np.inf
    with pytest.raises(InvalidInput, match="finite coordinates"):
        landmark_errors(pred, target, vis)


@pytest.mark.parametrize(
    ("pred_shape", "target_shape", "vis_shape", "message"),
    [
        ((2, 8, 2), (2, 6, 2), (2, 8), "target: expected shape"),
        ((2, 8, 2), (2, 8, 2), (2, 7), "visibility: expected shape"),
        ((2, 8, 2), (3, 8, 2), (2, 8), "target: expected shape"),
        ((2, 8, 3), (2, 8, 3), (2, 8), "x, y last"),
        ((2, 16), (2, 16), (2, 8), "expected shape"),
        ((0, 8, 2), (0, 8, 2), (0, 8), "at least one"),
    ],
)
def test_landmark_errors_rejects_bad_shapes(pred_shape, target_shape, vis_shape, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        landmark_errors(np.zeros(pred_shape), np.zeros(target_shape), np.zeros(vis_shape, dtype=int))


def test_visibility_accuracy_hand_computed() -> None:
    logits = np.array(
        [
            [
                [2.0, 0.0, 0.0],  # predicts visible,   truth visible   -> right
                [0.0, 0.0, 3.0],  # predicts truncated, truth occluded  -> wrong
                [0.0, 1.0, 5.0],  # predicts truncated, truth truncated -> right
                [9.0, 0.0, 0.0],  # truth absent -> ignored
                [1.0, 1.0, 0.0],  # tie visible/occluded -> lower class, visible; truth occluded -> wrong
            ]
        ]
    )
    vis = np.array([[VIS_VISIBLE, VIS_OCCLUDED, VIS_TRUNCATED, VIS_ABSENT, VIS_OCCLUDED]])
    assert visibility_accuracy(logits, vis) == pytest.approx(2 / 4)


@pytest.mark.parametrize(
    ("logits", "vis", "message"),
    [
        (np.zeros((2, 8, 3)), np.zeros((2, 7), dtype=int), "expected shape"),
        (np.zeros((2, 8, 2)), np.zeros((2, 8), dtype=int), "at least 3 classes"),
        (np.zeros((1, 2, 3)), np.array([[0, 4]]), "codes 0..3"),
        (np.zeros((1, 2, 3)), np.array([[3, 3]]), "only absent"),
        (np.zeros((0, 8, 3)), np.zeros((0, 8), dtype=int), "at least one"),
    ],
)
def test_visibility_accuracy_rejects_bad_input(logits, vis, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        visibility_accuracy(logits, vis)


# ----------------------------------------------------------------------------------------------- retrieval


def test_retrieval_hand_computed_with_second_gallery_image_at_rank_two() -> None:
    gallery = np.array([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    gallery_ids = np.array(["y", "x", "x", "z"])
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [1.0, 0.0]])
    query_ids = np.array(["x", "y", "y", "none"])
    # q0 "x": cosines 0.8, 0.6, 0, -1 -> order g0(y), g1(x), ... -> first "x" at rank 2 (its other image g2 at 3).
    # q1 "y": cosines 0.6, 0.8, 1, 0 -> order g2, g1, g0(y) -> rank 3.
    # q2 "y": identical to g0 -> rank 1.
    # q3 "none": no gallery image of its id -> a miss at every k, and reported.
    result = retrieval_topk(queries, query_ids, gallery, gallery_ids, ks=(1, 2, 3, 20))
    assert result["topk"] == pytest.approx({1: 1 / 4, 2: 2 / 4, 3: 3 / 4, 20: 3 / 4})
    assert result["queries"] == 4
    assert result["queries_without_match"] == 1
    json.dumps(result)


def test_retrieval_normalises_rows_defensively() -> None:
    # Raw dot products would rank the long wrong vector first (10 * 0.06 = 0.6 > 0.1); cosines do not.
    gallery = np.array([[10.0, 0.0], [0.6, 0.8]])
    result = retrieval_topk(np.array([[0.06, 0.08]]), np.array([1]), gallery, np.array([0, 1]), ks=(1,))
    assert result["topk"] == {1: 1.0}


def test_retrieval_ties_go_to_lower_gallery_index() -> None:
    gallery = np.array([[1.0, 0.0], [1.0, 0.0]])  # identical: g0 ranks before g1
    queries = np.array([[1.0, 0.0], [1.0, 0.0]])
    result = retrieval_topk(queries, np.array(["b", "a"]), gallery, np.array(["a", "b"]), ks=(1, 2))
    # Query "b" finds its item g1 only at rank 2; query "a" finds g0 at rank 1.
    assert result["topk"] == {1: 0.5, 2: 1.0}


def _overlapping_sets() -> tuple[np.ndarray, np.ndarray]:
    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    return emb, np.array(["a", "b", "a", "c"])


def test_retrieval_exclude_same_index_when_queries_are_the_gallery() -> None:
    emb, ids = _overlapping_sets()
    # Without exclusion every query finds itself first.
    assert retrieval_topk(emb, ids, emb, ids, ks=(1,))["topk"] == {1: 1.0}
    result = retrieval_topk(emb, ids, emb, ids, ks=(1, 2, 3), exclude_same_index=np.arange(4))
    # q0 "a": itself left out; cosines g1 0.8, g2 0.6, g3 0 -> the other "a" (g2) at rank 2.
    # q1 "b" and q3 "c": their only gallery image is themselves -> no match left: misses, reported.
    # q2 "a": cosines g0 0.6, g1 0.96, g3 0.8 -> order g1, g3, g0 -> rank 3.
    assert result["topk"] == pytest.approx({1: 0.0, 2: 1 / 4, 3: 2 / 4})
    assert result["queries_without_match"] == 2


def test_retrieval_exclude_minus_one_means_none() -> None:
    emb, ids = _overlapping_sets()
    # Only q0 excludes itself (-> rank 2, as above); the others still find themselves at rank 1.
    result = retrieval_topk(emb, ids, emb, ids, ks=(1, 2), exclude_same_index=np.array([0, -1, -1, -1]))
    assert result["topk"] == {1: 0.75, 2: 1.0}
    assert result["queries_without_match"] == 0


def _reference_retrieval(q, qid, g, gid, ks, exclude) -> dict[int, float]:
    """One stable full sort per query: slow and obviously right."""
    qn = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    gn = (g / np.linalg.norm(g, axis=1, keepdims=True)).astype(np.float32)
    hits = dict.fromkeys(ks, 0)
    for i in range(len(q)):
        order = [j for j in np.argsort(-(gn @ qn[i]), kind="stable") if j != exclude[i]]
        correct = [r for r, j in enumerate(order) if gid[j] == qid[i]]
        for k in ks:
            hits[k] += bool(correct) and correct[0] < k
    return {k: hits[k] / len(q) for k in ks}


def test_retrieval_chunking_gives_the_same_result_as_chunk_one() -> None:
    rng = np.random.default_rng(2)
    q, g = rng.normal(size=(50, 8)), rng.normal(size=(80, 8))
    qid, gid = rng.integers(0, 25, size=50), rng.integers(0, 20, size=80)  # some query ids absent from gallery
    exclude = np.where(rng.random(50) < 0.5, rng.integers(0, 80, size=50), -1)
    ks = (1, 5, 10, 20)
    one = retrieval_topk(q, qid, g, gid, ks=ks, exclude_same_index=exclude, chunk=1)
    for chunk in (7, 50, 1024):
        assert retrieval_topk(q, qid, g, gid, ks=ks, exclude_same_index=exclude, chunk=chunk) == one
    assert one["topk"] == pytest.approx(_reference_retrieval(q, qid, g, gid, ks, exclude))
    assert 0 < one["queries_without_match"] < 50
    assert 0 < one["topk"][1] < one["topk"][20] < 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query_ids": np.array(["a"])}, r"query_ids: expected shape \(2,\)"),
        ({"gallery_ids": np.array(["a", "b"])}, r"gallery_ids: expected shape \(3,\)"),
        ({"gallery_emb": np.ones((3, 5))}, "expected 4 columns"),
        ({"query_emb": np.ones((0, 4)), "query_ids": np.array([], dtype=str)}, "expected at least one"),
        ({"gallery_emb": np.ones((0, 4)), "gallery_ids": np.array([], dtype=str)}, "expected at least one"),
        ({"exclude_same_index": np.array([0])}, r"exclude_same_index: expected shape \(2,\)"),
        ({"exclude_same_index": np.array([0, 3])}, r"indices in -1..2"),
        ({"chunk": 0}, "chunk: expected a positive integer"),
        ({"ks": ()}, "positive integers"),
        ({"gallery_ids": np.array([1, 2, 3])}, "ids of one comparable type"),  # "1" must not match 1
        ({"gallery_ids": np.array([1.0, 2.0, 3.0]), "query_ids": np.array([1.0, 2.0])}, "one comparable type"),
    ],
)
def test_retrieval_rejects_bad_input(kwargs: dict, message: str) -> None:
    args = {
        "query_emb": np.ones((2, 4)),
        "query_ids": np.array(["a", "b"]),
        "gallery_emb": np.ones((3, 4)),
        "gallery_ids": np.array(["a", "b", "c"]),
    }
    args.update(kwargs)
    with pytest.raises(InvalidInput, match=message):
        retrieval_topk(**args)


# ----------------------------------------------------------------------------------------------- reporting


def test_flatten_metrics_nested_dicts_int_keys_and_lists() -> None:
    nested = {
        "category": {"top3": np.float32(0.5), "top5": 0.75},
        "retrieval": {"topk": {1: 0.25}, "queries": np.int64(4)},
        "landmarks": {"ne_per_landmark": [0.1, math.nan], "detection_rate": {0.05: 0.4}},
    }
    flat = flatten_metrics(nested)
    assert list(flat) == [
        "category.top3",
        "category.top5",
        "retrieval.topk.1",
        "retrieval.queries",
        "landmarks.ne_per_landmark.0",
        "landmarks.ne_per_landmark.1",
        "landmarks.detection_rate.0.05",
    ]
    assert flat["category.top3"] == 0.5 and type(flat["category.top3"]) is float
    assert flat["retrieval.queries"] == 4 and type(flat["retrieval.queries"]) is int
    assert math.isnan(flat["landmarks.ne_per_landmark.1"])
    json.dumps(flat)


@pytest.mark.parametrize("leaf", ["fast", True, None])
def test_flatten_metrics_rejects_non_numbers(leaf) -> None:
    with pytest.raises(InvalidInput, match="expected a number"):
        flatten_metrics({"group": {"metric": leaf}})
