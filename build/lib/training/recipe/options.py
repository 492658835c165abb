"""The options of a training run that are plain data: the augmentation settings and their presets, and a
whole-photo domain with its dose. No torch here, so ``python -m training.train --help`` works in the light install.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5  # probability
    max_rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    max_shift: float = 0.1  # fraction of the image side
    brightness: float = 0.25  # +- on [0, 1] intensities
    contrast: tuple[float, float] = (0.7, 1.3)
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)  # fraction of the image
    # camera and lighting (0 / (1, 1): off, and no random numbers drawn for them)
    gamma: tuple[float, float] = (1.0, 1.0)  # log-uniform range of the gamma on [0, 1] intensities
    downscale_prob: float = 0.0  # share of faces shrunk and enlarged again (a smaller face, a softer camera)
    downscale_factors: tuple[float, ...] = (0.35, 0.5, 0.7)  # linear factors, one drawn per face
    blur_prob: float = 0.0  # share of faces blurred (defocus, motion, compression)
    blur_sigma: tuple[float, float] = (0.3, 1.2)  # Gaussian sigma in pixels of the 48 px face
    noise_std: float = 0.0  # maximum std of added Gaussian noise on [0, 1] intensities (drawn per face)
    jpeg_prob: float = 0.0  # share of faces JPEG-compressed at the model's resolution (block and ringing artefacts)
    jpeg_quality: tuple[int, int] = (15, 75)  # JPEG quality range, one drawn per face

    def to_dict(self) -> dict:
        return asdict(self)


# Camera and lighting augmentation for whole-photo fine-tuning (``training.train --camera-aug``).
CAMERA = dict(gamma=(0.6, 1.6), downscale_prob=0.3, blur_prob=0.3, noise_std=0.04)
# JPEG compression alone (``training.train --jpeg-aug``): measured apart from CAMERA under the transfer protocol.
JPEG = dict(jpeg_prob=0.5)


@dataclass(frozen=True)
class DomainSpec:
    """A whole-photo folder and its dose (faces per epoch; 0: each training face once)."""

    path: Path
    dose: int = 0

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def parse(cls, text: str) -> "DomainSpec":
        """``PATH`` or ``PATH:DOSE`` (the dose a whole number >= 0). ValueError with the reason otherwise."""
        path, sep, dose = text.rpartition(":")
        if not sep or not dose.isdigit():  # no dose given (or a ':' inside the path)
            return cls(Path(text))
        if not path:
            raise ValueError(f"--domain {text!r}: the folder is missing (PATH or PATH:DOSE)")
        return cls(Path(path), int(dose))
