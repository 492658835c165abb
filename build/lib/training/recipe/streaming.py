"""Faces read per batch from a memory-mapped uint8 array (train.py --stream), for sets too large to hold decoded.

The default path turns a whole split into one float tensor up front (FER2013: 28,709 x 48 x 48 x 4 bytes = 265 MB
per process, the fast path). :class:`StreamedFaces` instead keeps the (N, S, S) uint8 memory map of
:func:`fer_core.analysis.datasets.memmap_face_arrays` and preprocesses only the rows a step asks for, with the same
:func:`fer_core.faces.preprocessing.faces_to_tensor`, so a batch holds the same numbers either way.
"""

from __future__ import annotations

import numpy as np
import torch

from fer_core.faces.preprocessing import PreprocessConfig, faces_to_tensor


class StreamedFaces:
    """Index like the preprocessed (N, 1, S, S) tensor it stands for: ``faces[idx]`` -> a tensor on ``device``."""

    def __init__(self, images: np.ndarray, preprocess: PreprocessConfig, device: torch.device,
                 memory_format: torch.memory_format = torch.contiguous_format):
        self.images = images  # (N, S, S) uint8, usually a read-only np.memmap
        self.preprocess = preprocess
        self.device = device
        self.memory_format = memory_format

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: torch.Tensor | slice) -> torch.Tensor:
        """``idx``: a 1-D tensor of row indices (any device) or a slice -> (len, 1, S, S) float32 on the device."""
        # a slice of the read-only map is copied (torch wants writable memory); fancy indexing copies already
        rows = np.array(self.images[idx]) if isinstance(idx, slice) else np.asarray(self.images[idx.cpu().numpy()])
        return faces_to_tensor(rows, self.preprocess).to(self.device, memory_format=self.memory_format)

    def chunks(self, start: int, stop: int, size: int = 4096):
        """Consecutive preprocessed pieces of rows [start, stop), at most ``size`` rows each (bounded memory)."""
        for a in range(start, stop, size):
            yield self[a:min(a + size, stop)]
