"""The one explicit class order, and the mapping of dataset folder names onto it.

FER2013's own integer order is used so that ``fer2013.csv`` labels map directly.
Never derive label order from a directory listing.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)

# Common spellings of the same expression in public dataset folders (lower-case).
ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "contempt": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
}


class UnknownClassError(ValueError):
    """A class name (e.g. a dataset folder) that is not one of the 7 expressions."""


def canonical_name(name: str) -> str:
    """Map a folder or label name onto an entry of EMOTIONS, case-insensitively.

    Raises UnknownClassError naming the offending name when it is not recognised.
    """
    key = name.strip().lower()
    if key not in ALIASES:
        raise UnknownClassError(
            f"Unknown expression class {name!r}. Expected one of {', '.join(EMOTIONS)} "
            f"(aliases such as 'anger', 'happiness', 'sadness', 'surprised' are accepted)."
        )
    return ALIASES[key]


def label_index(name: str) -> int:
    """Integer label (FER2013 order) of a folder or label name."""
    return EMOTIONS.index(canonical_name(name))
