"""The Xception network for 48x48 grayscale faces.

Entry flow: a convolutional stem and strided residual blocks of depthwise separable
convolutions. Middle flow: ``middle_blocks`` (8) residual blocks of three separable
convolutions at constant width. Exit flow: one strided residual block, two separable
convolutions, global average pooling and dense layers. The network returns logits;
softmax is applied once, at inference time.
"""

from __future__ import annotations

import torch
from torch import nn

from .variants import VARIANTS, XceptionConfig


class SeparableConv2d(nn.Sequential):
    """3x3 depthwise convolution followed by a 1x1 pointwise convolution (no bias: a BatchNorm follows)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
        )


class XceptionBlock(nn.Module):
    """Residual block of ``reps`` (ReLU -> SeparableConv -> BN) units, optionally strided by max-pooling.

    The shortcut is the identity when shape is kept, else a strided 1x1 conv + BN.
    """

    def __init__(self, in_ch: int, out_ch: int, reps: int, stride: int = 1, grow_first: bool = True,
                 start_with_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_ch
        for i in range(reps):
            target = out_ch if (grow_first and i == 0) or (not grow_first and i == reps - 1) else ch
            if i > 0 or start_with_relu:
                layers.append(nn.ReLU(inplace=i > 0))
            layers += [SeparableConv2d(ch, target), nn.BatchNorm2d(target)]
            ch = target
        if stride > 1:
            layers.append(nn.MaxPool2d(3, stride, padding=1))
        self.body = nn.Sequential(*layers)
        if in_ch != out_ch or stride > 1:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Xception(nn.Module):
    """(B, in_channels, 48, 48) float32 normalised faces -> (B, num_classes) logits."""

    def __init__(self, config: XceptionConfig = XceptionConfig()):
        super().__init__()
        self.config = config
        stem: list[nn.Module] = []
        ch = config.in_channels
        for i, out in enumerate(config.stem_channels):
            stride = config.stem_stride if i == 0 else 1
            stem += [nn.Conv2d(ch, out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out),
                     nn.ReLU(inplace=True)]
            ch = out
        self.stem = nn.Sequential(*stem)

        entry: list[nn.Module] = []
        for i, (out, stride) in enumerate(zip(config.entry_channels, config.entry_strides, strict=True)):
            entry.append(XceptionBlock(ch, out, reps=2, stride=stride, start_with_relu=i > 0))
            ch = out
        self.entry_flow = nn.Sequential(*entry)

        self.middle_flow = nn.Sequential(*[XceptionBlock(ch, ch, reps=3) for _ in range(config.middle_blocks)])

        c1, c2 = config.exit_channels
        exit_layers: list[nn.Module] = [XceptionBlock(ch, c2, reps=2, stride=2, grow_first=False)]
        if c1 != ch:  # keep the block's first conv at c1 width as in Xception's exit flow
            exit_layers[0] = nn.Sequential(XceptionBlock(ch, c1, reps=1), XceptionBlock(c1, c2, reps=1, stride=2))
        ch = c2
        for out in config.exit_convs:
            exit_layers += [SeparableConv2d(ch, out), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            ch = out
        self.exit_flow = nn.Sequential(*exit_layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(ch, config.hidden_units),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_units, config.num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.entry_flow(x)
        x = self.middle_flow(x)
        x = self.exit_flow(x)
        return self.head(self.pool(x))


def build_model(config: XceptionConfig | str = "base") -> Xception:
    """Build an Xception from a config or the name of a variant in VARIANTS."""
    if isinstance(config, str):
        if config not in VARIANTS:
            raise ValueError(f"Unknown model variant {config!r}; choose one of {sorted(VARIANTS)}.")
        config = VARIANTS[config]
    return Xception(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int = 48) -> int:
    """Multiply-accumulates of one forward pass on one face (conv and linear layers)."""
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal macs
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        macs += out.shape[1] * out.shape[2] * out.shape[3] * k

    def linear_hook(m: nn.Linear, _inp, _out):
        nonlocal macs
        macs += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, model.config.in_channels, image_size, image_size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return macs
