"""Which faces a training epoch sees, and in what dose: FER2013 and any number of whole-photo domains.

    sources in  -> :func:`assemble` -> a :class:`TrainingPool` (every face once, in memory)
    each epoch  -> :meth:`TrainingPool.epoch_order` (each source's dose, drawn and shuffled together)
    the card    -> :meth:`TrainingPool.report` (per source: faces, people, dose per epoch)

A whole-photo domain is a labelled folder ``<dir>/<class>/<photo>`` whose file names name the person
(``<person>_<n>.jpg``, :func:`fer_core.analysis.datasets.person_of`). Its faces are found and aligned by the app's detector
(:func:`fer_core.analysis.datasets.detect_face_arrays`), and only its training people are used: the test people (and the
calibration people, when a calibration fraction is set) of :func:`fer_core.analysis.datasets.split_by_person` never are.

A dose is the number of a source's faces drawn per epoch: below the source's size, a fresh random subset each epoch;
above it, every face once plus a random remainder. FER2013's dose 0 means every image once, as in training from
scratch. Whole photos come as a measured dose beside FER2013 instead of a flood of repeats.

:class:`IntensityBlend` makes faint expressions from a domain's own people: a person's aligned expressive face mixed
with the same person's neutral face, labelled with the matching soft label (share ``a`` of the expression).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_core.analysis.datasets import (
    FaceArrays,
    describe_skipped,
    detect_face_arrays,
    list_labelled_folder,
    split_by_person,
)
from fer_core.labels import EMOTIONS

from .fer_labels import one_hot
from .options import DomainSpec

NEUTRAL = EMOTIONS.index("neutral")


@dataclass
class Source:
    """One block of the pool: rows ``start:stop`` come from ``name``; ``dose`` of them are drawn per epoch."""

    name: str
    start: int
    stop: int
    dose: int
    people: int = 0  # whole-photo domains: the training people

    @property
    def size(self) -> int:
        return self.stop - self.start

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        """This epoch's rows of the source: a random subset of ``dose`` (all once, plus a random remainder)."""
        dose = self.dose or self.size
        whole, rest = divmod(dose, self.size)
        picks = [torch.randperm(self.size, generator=gen) for _ in range(whole)]
        picks.append(torch.randperm(self.size, generator=gen)[:rest])
        return torch.cat(picks) + self.start


@dataclass
class TrainingPool:
    """Every training face once: ``images`` (N, S, S) uint8, ``labels`` (N,), ``people`` (N,) str ('' for FER2013),
    and the :class:`Source` blocks they come from; ``colour`` (N, S, S, 3) uint8 RGB when the domains were read in
    colour (FER2013's gray faces repeated in the three channels)."""

    images: np.ndarray
    labels: np.ndarray
    people: np.ndarray
    sources: list[Source]
    colour: np.ndarray | None = None
    targets: np.ndarray | None = None  # (N, 7) float32 soft labels when a source has them (FER+ votes), else None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def epoch_size(self) -> int:
        return sum(s.dose or s.size for s in self.sources)

    def epoch_order(self, gen: torch.Generator) -> torch.Tensor:
        """The rows of one epoch: every source's dose, shuffled together (a function of ``gen`` only)."""
        order = torch.cat([s.draw(gen) for s in self.sources])
        return order[torch.randperm(len(order), generator=gen)]

    def epoch_class_counts(self) -> dict[str, float]:
        """Expected faces per class in one epoch (each source's class shares times its dose)."""
        counts = np.zeros(len(EMOTIONS))
        for s in self.sources:
            counts += np.bincount(self.labels[s.start:s.stop], minlength=len(EMOTIONS)) * (s.dose or s.size) / s.size
        return {name: round(float(c), 1) for name, c in zip(EMOTIONS, counts)}

    def report(self) -> list[dict]:
        """Per source, for the console and the model card: faces, people, dose per epoch, repeats per epoch."""
        return [{"source": s.name, "faces": s.size, "people": s.people, "dose_per_epoch": s.dose or s.size,
                 "repeats_per_epoch": round((s.dose or s.size) / s.size, 2)} for s in self.sources]


def domain_faces(spec: DomainSpec, size: int, test_fraction: float, calibration_fraction: float = 0.0,
                 cache_dir: str | Path | None = None, part: str = "train", colour: bool = False) -> FaceArrays:
    """The aligned faces of one person-split part of a whole-photo domain (warnings for left-out files printed);
    ``colour``: with their RGB crops too."""
    files = split_by_person(list_labelled_folder(spec.path), part, test_fraction,
                            calibration_fraction=calibration_fraction)
    if not len(files):
        raise ValueError(f"--domain {spec.path}: no {part} people (test fraction {test_fraction}, calibration "
                         f"fraction {calibration_fraction}); file names must be <person>_<n>.<ext>")
    faces = detect_face_arrays(files, size, cache_dir=cache_dir, colour=colour)
    if faces.skipped:
        print(describe_skipped(faces.skipped, f"--domain {spec.path}"), flush=True)
    return faces


def assemble(fer: FaceArrays, fer_dose: int, domains: list[tuple[DomainSpec, FaceArrays]]) -> TrainingPool:
    """FER2013's training faces and each domain's training faces in one pool, with their doses."""
    blocks = [("fer2013", fer, fer_dose)] + [(spec.name, faces, spec.dose) for spec, faces in domains]
    sources, start = [], 0
    for name, faces, dose in blocks:
        if dose < 0:
            raise ValueError(f"the dose of {name} must be >= 0 (0: every face once), got {dose}")
        people = len(set(faces.people.tolist())) if faces.people is not None else 0
        sources.append(Source(name, start, start + len(faces), dose, people))
        start += len(faces)
    people = [f.people if f.people is not None else np.full(len(f), "", dtype=str) for _, f, _ in blocks]
    colour = None
    if any(f.colour is not None for _, f, _ in blocks):  # gray faces: the same value in every channel
        colour = np.concatenate([f.colour if f.colour is not None else np.repeat(f.images[..., None], 3, axis=-1)
                                 for _, f, _ in blocks])
    targets = None
    if any(f.targets is not None for _, f, _ in blocks):  # sources without soft labels: their labels one-hot
        targets = np.concatenate([f.targets if f.targets is not None else one_hot(f.labels) for _, f, _ in blocks])
    return TrainingPool(np.concatenate([f.images for _, f, _ in blocks]),
                        np.concatenate([f.labels for _, f, _ in blocks]),
                        np.concatenate(people).astype(str), sources, colour, targets)


class IntensityBlend:
    """Same-person intensity blends: with probability ``prob`` an expressive whole-photo face is mixed with a
    neutral face of the same person, ``a x + (1 - a) n`` with ``a ~ U(min_share, 1)``, and its label becomes
    ``a`` of its expression and ``1 - a`` of neutral. Faces without a neutral face of their person (and FER2013's,
    whose people are unknown) are left as they are.

    Blending the normalised tensors equals blending the pixels: the normalisation is affine.
    """

    def __init__(self, pool: TrainingPool, prob: float, min_share: float = 0.3):
        if not 0.0 <= prob <= 1.0 or not 0.0 <= min_share <= 1.0:
            raise ValueError(f"blend probability and minimum share must be in [0, 1], got {prob}, {min_share}")
        self.prob, self.min_share = prob, min_share
        neutral_rows: dict[str, list[int]] = {}
        for row in np.flatnonzero((pool.labels == NEUTRAL) & (pool.people != "")):
            neutral_rows.setdefault(pool.people[row], []).append(int(row))
        # per row: its person's neutral rows as a slice [first, first + count) of one flat index
        flat, first, count = [], np.zeros(len(pool), np.int64), np.zeros(len(pool), np.int64)
        for person, rows in neutral_rows.items():
            members = np.flatnonzero(pool.people == person)
            first[members], count[members] = len(flat), len(rows)
            flat += rows
        count[pool.labels == NEUTRAL] = 0  # a neutral face stays neutral
        self.flat, self.first, self.count = torch.tensor(flat, dtype=torch.long), torch.from_numpy(first), \
            torch.from_numpy(count)

    @property
    def blendable(self) -> int:
        return int((self.count > 0).sum())

    def __call__(self, idx: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``idx`` of the preprocessed ``images`` (N, 1, S, S), blended where drawn, and their (B, C) soft
        labels. Random draws come from ``gen`` on the CPU; the image work happens on the images' device."""
        idx_cpu = idx.cpu()
        b = len(idx_cpu)
        count = self.count[idx_cpu]
        pick = (torch.rand(b, generator=gen) < self.prob) & (count > 0)
        share = torch.rand(b, generator=gen) * (1.0 - self.min_share) + self.min_share
        offset = (torch.rand(b, generator=gen) * count.clamp(min=1)).long()
        if not len(self.flat):  # no person has a neutral face: nothing to blend
            pick = torch.zeros(b, dtype=torch.bool)
        slot = torch.where(pick, self.first[idx_cpu] + offset, 0)  # rows not drawn read slot 0, then are discarded
        partner = torch.where(pick, self.flat[slot] if len(self.flat) else idx_cpu, idx_cpu)
        a = torch.where(pick, share, torch.ones(b))
        dev = images.device
        a_dev = a.to(dev).view(b, 1, 1, 1)
        x = a_dev * images[idx] + (1.0 - a_dev) * images[partner.to(dev)]
        target = torch.nn.functional.one_hot(labels[idx], len(EMOTIONS)).float() * a.to(dev).view(b, 1)
        target[:, NEUTRAL] += (1.0 - a).to(dev)
        return x, target
