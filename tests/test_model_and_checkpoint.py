"""The Xception network and plain-dict checkpoints."""

from __future__ import annotations

import pytest
import torch

from fer_core.faces.preprocessing import PreprocessConfig
from fer_core.labels import EMOTIONS
from fer_core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fer_core.model.network import VARIANTS, Xception, XceptionConfig, build_model, count_macs, count_parameters


def test_model_returns_logits_of_shape_b_by_7():
    model = build_model("tiny").eval()
    out = model(torch.randn(5, 1, 48, 48))
    assert out.shape == (5, len(EMOTIONS))
    # Logits, not probabilities: rows are not a softmax output.
    assert not torch.allclose(out.sum(1), torch.ones(5), atol=1e-3) or (out < 0).any()


def test_middle_flow_has_8_residual_blocks_of_separable_convs():
    model = build_model("small")
    assert len(model.middle_flow) == 8
    depthwise = [m for m in model.middle_flow.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 8 * 3
    assert isinstance(model.head[-1], torch.nn.Linear)


def test_gradients_reach_every_parameter():
    model = build_model("tiny").train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 48, 48)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_variants_differ_in_size_and_report_params_and_macs():
    sizes = {name: count_parameters(build_model(name)) for name in VARIANTS}
    assert sizes["tiny"] < sizes["small"] < sizes["base"]
    assert count_macs(build_model("tiny")) < count_macs(build_model("small"))


def test_checkpoint_round_trip_restores_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = Xception(XceptionConfig(**{**VARIANTS["tiny"].to_dict(), "dropout": 0.1})).eval()
    pre = PreprocessConfig(mean=0.4, std=0.3)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, pre, meta={"epoch": 3})
    raw = torch.load(path, weights_only=True)  # plain data only
    assert raw["class_names"] == list(EMOTIONS) and raw["config"]["dropout"] == 0.1
    loaded, pre2, names, meta = load_checkpoint(path)
    x = torch.randn(3, 1, 48, 48)
    assert torch.equal(model(x), loaded(x))
    assert pre2 == pre and names == EMOTIONS and meta["epoch"] == 3


def test_missing_or_corrupt_weights_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read"):
        load_checkpoint(bad)
