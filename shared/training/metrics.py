"""The DeepFashion paper's evaluation metrics as pure numpy functions (no torch), so they are easy to test.

Every ranking here breaks ties the same way: **equal scores rank in favour of the lower index**, i.e. exactly
as a stable sort by descending score would order them. So a result never depends on how numpy happens to
partition equal values, and a test can predict it by eye. Rankings are computed by counting how many items
rank ahead of the one of interest (``#higher + #equal-with-lower-index``), which is exact, linear per row and
needs no sort at all.

Results are plain Python floats/ints so they go straight into JSON (``nan`` marks "nothing to measure" where
documented; Python's ``json`` writes it as ``NaN``). Malformed input raises :class:`~shared.errors.InvalidInput`
saying which shape was expected and which was given.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from shared.errors import InvalidInput
from shared.vocabulary import ATTRIBUTE_GROUPS, VIS_ABSENT, VIS_VISIBLE

__all__ = [
    "attribute_topk_recall",
    "flatten_metrics",
    "landmark_errors",
    "retrieval_topk",
    "topk_accuracy",
    "visibility_accuracy",
]

# Rows handled at once by the classification metrics: keeps temporaries bounded for 1000-way scores.
_ROW_CHUNK = 4096


# --------------------------------------------------------------------------------------------- validation


def _array(x: Any, name: str, ndim: int, expected: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise InvalidInput(f"{name}: expected shape {expected}, got {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidInput(f"{name}: expected at least one sample, got shape {arr.shape}")
    return arr


def _numeric(arr: np.ndarray, name: str) -> np.ndarray:
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InvalidInput(f"{name}: expected numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise InvalidInput(f"{name}: expected no NaN, got {int(np.isnan(arr).sum())} NaN values")
    return arr


def _integers(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"{name}: expected integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _same_length(a: np.ndarray, a_name: str, b: np.ndarray, b_name: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise InvalidInput(f"{b_name}: expected {a.shape[0]} rows to match {a_name} {a.shape}, got shape {b.shape}")


def _ks(ks: Iterable[int], name: str = "ks") -> tuple[int, ...]:
    out = tuple(dict.fromkeys(ks))
    if not out or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in out):
        raise InvalidInput(f"{name}: expected one or more positive integers, got {tuple(ks)!r}")
    return tuple(int(k) for k in out)


# --------------------------------------------------------------------------------------------- ranking


def _topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, C) bool: which columns are among each row's k highest scores, ties going to the lower column.

    The k-th largest value comes from ``np.partition``; everything above it is in, and values equal to it are
    taken left to right until k are chosen.
    """
    n, c = scores.shape
    if k >= c:
        return np.ones((n, c), dtype=bool)
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]  # (N, 1) k-th largest score
    above = scores > kth
    equal = scores == kth
    room = k - above.sum(axis=1, keepdims=True)  # how many of the equal ones still fit
    return above | (equal & (np.cumsum(equal, axis=1) <= room))


# --------------------------------------------------------------------------------------------- category


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (3, 5)) -> dict[int, float]:
    """Category top-k accuracy: share of samples whose true (0-based) label is among the k highest scores.

    Samples with a label < 0 (unlabelled) are ignored. Ties rank in favour of the lower class index, so a
    true class tied with a lower-indexed one loses that place.
    """
    ks = _ks(ks)
    logits = _numeric(_array(logits, "logits", 2, "(N, num_classes)"), "logits")
    labels = _integers(_array(labels, "labels", 1, "(N,)"), "labels")
    _same_length(logits, "logits", labels, "labels")
    num_classes = logits.shape[1]
    if (labels >= num_classes).any():
        raise InvalidInput(f"labels: expected values < {num_classes} (number of classes), got {labels.max()}")
    keep = labels >= 0
    if not keep.any():
        raise InvalidInput("labels: expected at least one sample with a label >= 0, got none")
    logits, labels = logits[keep], labels[keep]

    ranks = np.empty(len(labels), dtype=np.int64)
    cols = np.arange(num_classes)
    for start in range(0, len(labels), _ROW_CHUNK):
        s, y = logits[start : start + _ROW_CHUNK], labels[start : start + _ROW_CHUNK]
        true = s[np.arange(len(y)), y][:, None]
        ahead = (s > true) | ((s == true) & (cols < y[:, None]))
        ranks[start : start + len(y)] = ahead.sum(axis=1)
    return {k: float(np.mean(ranks < k)) for k in ks}


# --------------------------------------------------------------------------------------------- attributes


def _ordered_groups(groups: np.ndarray) -> list[str]:
    """The paper's groups in their canonical order first, then any others in order of first appearance."""
    seen = list(dict.fromkeys(groups.tolist()))
    known = [g for g in ATTRIBUTE_GROUPS if g in seen]
    return known + [g for g in seen if g not in ATTRIBUTE_GROUPS]


def attribute_topk_recall(
    scores: np.ndarray, targets: np.ndarray, groups: Sequence[str], ks: Sequence[int] = (3, 5)
) -> dict[str, dict[int, float]]:
    """DeepFashion attribute top-k recall, over all attributes ("all") and within each attribute group.

    For each image the k highest-scoring attributes are taken (within group g: the k highest among g's
    attributes only); recall = positives that landed in their image's top-k / all positives, pooled over
    images. Images without a positive in a group add nothing to it; a group with no positive at all is
    left out of the result (rather than reported as 0). Ties rank in favour of the lower attribute index.
    ``targets`` is a 0/1 multi-hot matrix; ``groups[i]`` names attribute i's group.
    """
    ks = _ks(ks)
    scores = _numeric(_array(scores, "scores", 2, "(N, num_attributes)"), "scores")
    targets = _numeric(_array(targets, "targets", 2, "(N, num_attributes)"), "targets")
    if targets.shape != scores.shape:
        raise InvalidInput(f"targets: expected shape {scores.shape} to match scores, got {targets.shape}")
    if not np.isin(targets, (0, 1)).all():
        raise InvalidInput("targets: expected a 0/1 multi-hot matrix, got other values")
    group_arr = np.asarray(list(groups), dtype=object)
    if group_arr.shape != (scores.shape[1],):
        raise InvalidInput(f"groups: expected one group name per attribute ({scores.shape[1]}), got {len(group_arr)}")
    if "all" in set(group_arr.tolist()):
        raise InvalidInput('groups: expected group names other than "all" (reserved for the overall result)')
    positive = targets.astype(bool)

    columns: dict[str, np.ndarray] = {"all": np.arange(scores.shape[1])}
    for g in _ordered_groups(group_arr):
        columns[g] = np.flatnonzero(group_arr == g)

    result: dict[str, dict[int, float]] = {}
    for name, cols in columns.items():
        pos = positive[:, cols]
        total = int(pos.sum())
        if total == 0:
            continue
        hits = dict.fromkeys(ks, 0)
        for start in range(0, scores.shape[0], _ROW_CHUNK):
            s = scores[start : start + _ROW_CHUNK, cols]
            p = pos[start : start + _ROW_CHUNK]
            for k in ks:
                hits[k] += int((_topk_mask(s, k) & p).sum())
        result[name] = {k: hits[k] / total for k in ks}
    return result


# --------------------------------------------------------------------------------------------- landmarks


def landmark_errors(
    pred: np.ndarray,
    target: np.ndarray,
    visibility: np.ndarray,
    thresholds: Sequence[float] = (0.05, 0.1, 0.2),
) -> dict[str, Any]:
    """The paper's normalised landmark error over visible landmarks, plus detection rates.

    ``pred`` and ``target`` are (N, L, 2) x, y as fractions of the image width/height, so a Euclidean
    distance between them is already normalised by image size. Only landmarks whose visibility code is
    ``VIS_VISIBLE`` count; occluded, truncated and absent ones are ignored (their targets are unreliable or
    missing). Returns ``{"ne", "ne_per_landmark" (list of L, nan where a slot has no visible landmark),
    "detection_rate": {thr: share with distance <= thr}, "count"}``; with no visible landmark at all the
    means are nan and count is 0.
    """
    pred = _numeric(_array(pred, "pred", 3, "(N, 8, 2)"), "pred")
    target = _numeric(_array(target, "target", 3, "(N, 8, 2)"), "target")
    visibility = _integers(_array(visibility, "visibility", 2, "(N, 8)"), "visibility")
    if pred.shape[2] != 2:
        raise InvalidInput(f"pred: expected shape (N, L, 2) with x, y last, got {pred.shape}")
    if target.shape != pred.shape:
        raise InvalidInput(f"target: expected shape {pred.shape} to match pred, got {target.shape}")
    if visibility.shape != pred.shape[:2]:
        raise InvalidInput(f"visibility: expected shape {pred.shape[:2]} to match pred, got {visibility.shape}")
    thresholds = tuple(float(t) for t in thresholds)

    dist = np.linalg.norm(pred.astype(np.float64) - target.astype(np.float64), axis=-1)  # (N, L)
    seen = visibility == VIS_VISIBLE
    if not np.isfinite(dist[seen]).all():
        raise InvalidInput("pred/target: expected finite coordinates at visible landmarks, got inf")
    d = dist[seen]
    count = int(d.size)
    per_slot = [float(dist[seen[:, j], j].mean()) if seen[:, j].any() else math.nan for j in range(pred.shape[1])]
    return {
        "ne": float(d.mean()) if count else math.nan,
        "ne_per_landmark": per_slot,
        "detection_rate": {t: float(np.mean(d <= t)) if count else math.nan for t in thresholds},
        "count": count,
    }


def visibility_accuracy(logits: np.ndarray, visibility: np.ndarray) -> float:
    """Share of landmarks whose visibility (visible/occluded/truncated) is predicted right.

    ``logits`` is (N, L, 3), ``visibility`` (N, L) VIS_* codes; slots coded ``VIS_ABSENT`` (the clothes type
    has no such landmark) are ignored. Argmax ties go to the lower class, i.e. towards "visible".
    """
    logits = _numeric(_array(logits, "logits", 3, "(N, 8, 3)"), "logits")
    visibility = _integers(_array(visibility, "visibility", 2, "(N, 8)"), "visibility")
    if visibility.shape != logits.shape[:2]:
        raise InvalidInput(f"visibility: expected shape {logits.shape[:2]} to match logits, got {visibility.shape}")
    if logits.shape[2] < VIS_ABSENT:
        raise InvalidInput(f"logits: expected at least {VIS_ABSENT} classes in the last axis, got {logits.shape}")
    if ((visibility < 0) | (visibility > VIS_ABSENT)).any():
        raise InvalidInput(f"visibility: expected codes 0..{VIS_ABSENT}, got {np.unique(visibility).tolist()}")
    keep = visibility != VIS_ABSENT
    if not keep.any():
        raise InvalidInput("visibility: expected at least one landmark with code 0, 1 or 2, got only absent ones")
    return float(np.mean(logits.argmax(axis=-1)[keep] == visibility[keep]))


# --------------------------------------------------------------------------------------------- retrieval


def _normalise(emb: np.ndarray) -> np.ndarray:
    emb = emb.astype(np.float32, copy=True)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, np.float32(1e-12))  # an all-zero row stays zero rather than becoming NaN


def _id_codes(query_ids: np.ndarray, gallery_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map both id arrays onto shared integer codes so per-chunk comparisons are fast integer compares.

    Both sides must hold the same kind of id (strings, integers, or Python objects): numpy would otherwise
    quietly turn integer ids into strings and match ``1`` with ``"1"``.
    """
    families = {"U": "strings", "S": "strings", "i": "integers", "u": "integers", "O": "objects"}
    kinds = {families.get(a.dtype.kind) for a in (query_ids, gallery_ids)}
    if None in kinds or len(kinds - {"objects"}) > 1:
        raise InvalidInput(
            f"query_ids/gallery_ids: expected ids of one comparable type (strings or integers), got "
            f"{query_ids.dtype} and {gallery_ids.dtype}"
        )
    try:
        _, codes = np.unique(np.concatenate([query_ids, gallery_ids]), return_inverse=True)
    except TypeError as err:  # Python objects that do not order against each other
        raise InvalidInput(f"query_ids/gallery_ids: expected ids that can be sorted, got {err}") from err
    codes = codes.reshape(-1)
    return codes[: len(query_ids)], codes[len(query_ids) :]


def retrieval_topk(
    query_emb: np.ndarray,
    query_ids: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_ids: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 20),
    exclude_same_index: np.ndarray | None = None,
    chunk: int = 1024,
) -> dict[str, Any]:
    """The paper's top-k retrieval accuracy: share of queries with a same-id gallery item among the k nearest.

    Similarity is cosine (rows are L2-normalised here, defensively, and compared in float32). Queries are
    processed ``chunk`` rows at a time, so memory stays at about ``chunk x len(gallery)`` floats whatever
    the sizes. For each query the best-placed correct item's rank is counted directly (items ahead of it =
    higher similarity, or equal similarity and lower gallery index), so the result is exact and tie-proof.

    ``exclude_same_index`` (Q,) names one gallery index per query to leave out (-1 = none), for when the
    query set and the gallery overlap and a query must not find itself. Queries left with no same-id gallery
    item (after that exclusion) count as misses and are also reported in ``queries_without_match``.
    Returns ``{"topk": {k: accuracy}, "queries": Q, "queries_without_match": m}``.
    """
    ks = _ks(ks)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InvalidInput(f"chunk: expected a positive integer, got {chunk!r}")
    query_emb = _numeric(_array(query_emb, "query_emb", 2, "(Q, D)"), "query_emb")
    gallery_emb = _numeric(_array(gallery_emb, "gallery_emb", 2, "(G, D)"), "gallery_emb")
    query_ids = np.asarray(query_ids)
    gallery_ids = np.asarray(gallery_ids)
    if query_ids.shape != (len(query_emb),):
        raise InvalidInput(f"query_ids: expected shape ({len(query_emb)},) to match query_emb, got {query_ids.shape}")
    if gallery_ids.shape != (len(gallery_emb),):
        raise InvalidInput(
            f"gallery_ids: expected shape ({len(gallery_emb)},) to match gallery_emb, got {gallery_ids.shape}"
        )
    if gallery_emb.shape[1] != query_emb.shape[1]:
        raise InvalidInput(
            f"gallery_emb: expected {query_emb.shape[1]} columns like query_emb, got shape {gallery_emb.shape}"
        )
    num_q, num_g = len(query_emb), len(gallery_emb)
    if exclude_same_index is None:
        exclude = np.full(num_q, -1, dtype=np.int64)
    else:
        exclude = _integers(np.asarray(exclude_same_index), "exclude_same_index")
        if exclude.shape != (num_q,):
            raise InvalidInput(f"exclude_same_index: expected shape ({num_q},), got {exclude.shape}")
        if ((exclude < -1) | (exclude >= num_g)).any():
            raise InvalidInput(f"exclude_same_index: expected gallery indices in -1..{num_g - 1}")

    q_codes, g_codes = _id_codes(query_ids, gallery_ids)
    q = _normalise(query_emb)
    g = _normalise(gallery_emb)
    g_index = np.arange(num_g)

    ranks = np.zeros(num_q, dtype=np.int64)  # items ranked ahead of the query's best correct item
    found = np.zeros(num_q, dtype=bool)  # whether the query has a correct item at all
    for start in range(0, num_q, chunk):
        stop = min(start + chunk, num_q)
        rows = np.arange(stop - start)
        sims = q[start:stop] @ g.T  # (B, G)
        match = q_codes[start:stop, None] == g_codes[None, :]
        ex = exclude[start:stop]
        has_ex = ex >= 0
        sims[rows[has_ex], ex[has_ex]] = -np.inf  # ranks behind every real item ...
        match[rows[has_ex], ex[has_ex]] = False  # ... and is never a correct answer
        found[start:stop] = match.any(axis=1)
        best = np.where(match, sims, -np.inf).max(axis=1, keepdims=True)  # best correct similarity
        first = np.argmax(match & (sims == best), axis=1)[:, None]  # lowest index holding it
        ahead = (sims > best) | ((sims == best) & (g_index[None, :] < first))
        ranks[start:stop] = ahead.sum(axis=1)

    return {
        "topk": {k: float(np.mean(found & (ranks < k))) for k in ks},
        "queries": num_q,
        "queries_without_match": int((~found).sum()),
    }


# --------------------------------------------------------------------------------------------- reporting


def flatten_metrics(nested: Mapping[Any, Any], prefix: str = "") -> dict[str, float | int]:
    """Flatten nested metric dicts (and lists) into dotted keys for a flat JSON file.

    ``{"category": {"top3": 0.8}}`` -> ``{"category.top3": 0.8}``; non-string keys become ``str(key)``
    (``{3: ..}`` -> ``"3"``), list items are keyed by position. Leaves must be numbers; they come back as
    plain Python floats, except integers (counts), which stay plain ints so a JSON file shows ``1000``.
    """
    flat: dict[str, float | int] = {}
    for key, value in nested.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name))
        elif isinstance(value, (list, tuple)):
            flat.update(flatten_metrics(dict(enumerate(value)), name))
        elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidInput(
                f"{name}: expected a number or a nested dict/list of numbers, got {type(value).__name__}"
            )
        elif isinstance(value, (int, np.integer)):
            flat[name] = int(value)
        else:
            flat[name] = float(value)
    return flat
