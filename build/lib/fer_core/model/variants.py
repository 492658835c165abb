"""The network's shape as plain data: :class:`XceptionConfig` (stored in every checkpoint) and the named variants.

No torch here, so a command's ``--help`` can list the variants in the light install; :mod:`fer_core.model.network`
builds the network from a config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class XceptionConfig:
    """Width and depth of the network. Stored in every checkpoint."""

    in_channels: int = 1
    num_classes: int = 7
    stem_channels: tuple[int, ...] = (32, 64)  # 3x3 convs at full resolution
    stem_stride: int = 1  # stride of the first stem conv: 2 halves the grid before the network widens
    entry_channels: tuple[int, ...] = (128, 192, 256)  # one stride-2 residual block each
    entry_strides: tuple[int, ...] = (2, 2, 2)  # per entry block (2 = max-pool stride 2, 1 = keep the grid)
    middle_blocks: int = 8  # residual blocks at entry_channels[-1] width
    exit_channels: tuple[int, int] = (256, 384)  # the strided exit residual block
    exit_convs: tuple[int, ...] = (512,)  # separable convs before pooling
    hidden_units: int = 256  # dense layer before the classifier
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "XceptionConfig":
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**kwargs)


# Named variants: a smaller or larger network is one argument away.
VARIANTS: dict[str, XceptionConfig] = {
    "tiny": XceptionConfig(stem_channels=(16, 32), entry_channels=(64, 96, 128), exit_channels=(128, 192),
                           exit_convs=(256,), hidden_units=128),
    "small": XceptionConfig(stem_channels=(32, 48), entry_channels=(96, 128, 192), exit_channels=(192, 256),
                            exit_convs=(384,), hidden_units=256),
    "base": XceptionConfig(),
    # `small` with the grid halved by the first stem conv instead of by the last entry block: the same weights
    # (shapes), the middle flow still at 6x6, 46 % of the multiply-adds (SPEED.md's layout D).
    "small-fast": XceptionConfig(stem_channels=(32, 48), stem_stride=2, entry_channels=(96, 128, 192),
                                 entry_strides=(2, 2, 1), exit_channels=(192, 256), exit_convs=(384,),
                                 hidden_units=256),
}
