"""Which labels FER2013's training faces carry: FER2013's own (one annotator each), or a mix with FER+'s ten votes.

``--fer-labels ferplus-votes --fer-label-weight a`` trains every FER2013 face on the soft target

    a * one_hot(FER2013 label) + (1 - a) * vote distribution

where the vote distribution is the share of each of the seven classes among the face's emotion votes
(:func:`fer_core.analysis.votes.vote_distributions`): contempt, unknown and not-a-face votes are dropped (contempt is
no class of the model, the other two say nothing about the expression). A face without a FER+ row, or whose votes
are all contempt / unknown / not-a-face, keeps its one-hot FER2013 label. ``a = 1`` is FER2013's labels; ``a = 0``
the votes alone. Whole-photo domains keep their posed labels (one-hot). Measured under the transfer protocol in
docs/transfer.md.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fer_core.analysis.datasets import FaceArrays
from fer_core.analysis.votes import Votes, vote_distributions, votes_for
from fer_core.labels import EMOTIONS

FER_LABELS = ("fer2013", "ferplus-votes")


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) class indices -> (N, 7) float32."""
    return np.eye(len(EMOTIONS), dtype=np.float32)[labels]


def vote_targets(labels: np.ndarray, counts: np.ndarray, weight: float) -> tuple[np.ndarray, int]:
    """(N, 7) float32 soft targets ``weight * one_hot(labels) + (1 - weight) * votes`` (one-hot where a face has no
    emotion vote), and how many faces had votes to mix in."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the FER2013 label's weight must be in [0, 1], got {weight}")
    hard = one_hot(labels)
    dist = vote_distributions(counts)
    voted = ~np.isnan(dist).any(axis=1)
    targets = hard.copy()
    targets[voted] = weight * hard[voted] + (1.0 - weight) * dist[voted]
    return targets, int(voted.sum())


def with_vote_targets(fer: FaceArrays, votes: Votes, weight: float) -> tuple[FaceArrays, dict]:
    """FER2013's faces with soft targets from ``votes`` (matched by class folder and file name); a report for the
    console and the model card."""
    if fer.names is None:
        raise ValueError("FER+ votes are matched by file name: read FER2013 from its folder layout, not a CSV file")
    targets, voted = vote_targets(fer.labels, votes_for(list(fer.names), votes), weight)
    agree = float((targets.argmax(1) == fer.labels).mean())
    report = {"labels": "ferplus-votes", "fer2013_label_weight": weight, "votes_file": votes.source,
              "faces": len(fer), "faces_with_votes": voted, "target_argmax_agrees_with_fer2013": round(agree, 4)}
    return replace(fer, targets=targets), report
