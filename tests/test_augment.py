"""Training augmentation: batched per-image transforms and mixup/CutMix."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from training.recipe.augment import AugmentConfig, augment_batch, mix_batch

NO_CHANGE = AugmentConfig(hflip=0.0, max_rotation_deg=0.0, scale=(1.0, 1.0), max_shift=0.0, brightness=0.0,
                          contrast=(1.0, 1.0), erase_prob=0.0)


def _gradient_faces(n: int = 4) -> torch.Tensor:
    """(n, 1, 48, 48) images whose pixels grow left -> right and top -> bottom, so any flip is visible."""
    ramp = torch.arange(48, dtype=torch.float32)
    return (ramp.view(1, 48) + 100 * ramp.view(48, 1)).expand(n, 1, 48, 48).clone()


def test_identity_settings_leave_faces_unchanged():
    x = _gradient_faces()
    out = augment_batch(x, 0.25, NO_CHANGE, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-3, rtol=0)


def test_flip_is_horizontal_never_vertical():
    x = _gradient_faces()
    cfg = AugmentConfig(**{**NO_CHANGE.to_dict(), "hflip": 1.0})
    out = augment_batch(x, 0.25, cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.flip(x, dims=[3]), atol=1e-3, rtol=0)


def test_each_image_gets_its_own_random_transform():
    x = _gradient_faces(8)
    out = augment_batch(x, 0.25, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert len({round(float(o.sum()), 1) for o in out}) == 8


def _label_images(labels: torch.Tensor) -> torch.Tensor:
    """Each image is filled with its own label value, so a mix shows which images were combined."""
    return labels.float().view(-1, 1, 1, 1).expand(len(labels), 1, 48, 48).clone()


def test_mixup_alpha_zero_is_a_no_op():
    y = torch.arange(7)
    x = _label_images(y)
    mx, ya, yb, lam = mix_batch(x, y, 0.0, 0.5, torch.Generator().manual_seed(0))
    assert mx is x and lam == 1.0 and torch.equal(ya, y) and torch.equal(yb, y)


def test_mixup_blends_whole_images_with_the_returned_weight():
    y = torch.arange(7)
    x = _label_images(y)
    mx, ya, yb, lam = mix_batch(x, y, 0.4, 0.0, torch.Generator().manual_seed(1))  # mixup only
    assert 0.0 <= lam <= 1.0
    expected = lam * ya.float() + (1 - lam) * yb.float()
    torch.testing.assert_close(mx.mean(dim=(1, 2, 3)), expected)
    assert sorted(yb.tolist()) == y.tolist()  # the partners are a permutation of the batch


def test_cutmix_pastes_a_box_whose_area_matches_lambda():
    y = torch.arange(7) * 10
    x = _label_images(y)
    for seed in range(5):
        mx, ya, yb, lam = mix_batch(x, y, 1.0, 1.0, torch.Generator().manual_seed(seed))  # CutMix only
        for img, a, b in zip(mx, ya, yb):
            if a == b:
                continue
            pasted = (img == b.float()).float().mean().item()
            assert ((img == a.float()) | (img == b.float())).all()
            assert abs(pasted - (1 - lam)) < 1e-6


def test_mixstyle_mixes_the_style_of_training_batches_only():
    from fer_core.model.network import build_model
    from training.recipe.mixstyle import attach_mixstyle, style_layers

    model = build_model("tiny")
    x = torch.randn(6, 1, 48, 48)
    model.eval()
    with torch.no_grad():
        plain_eval = model(x)
    handles = attach_mixstyle(model, prob=1.0, alpha=0.1, gen=torch.Generator().manual_seed(0))
    assert len(handles) == len(style_layers(model)) == 3
    with torch.no_grad():  # evaluation (and so the shipped weights and the ONNX export) never mixes
        torch.testing.assert_close(model(x), plain_eval)
        stem = style_layers(model)[0]
        seen = []
        probe = stem.register_forward_hook(lambda _m, _i, out: seen.append(out.clone()))  # runs after MixStyle
        model.train()
        model(x)
        probe.remove()
        plain_stem = torch.nn.Sequential(*stem)(x)  # a copy of the stem without the hook
    mixed = seen[0]
    # each face keeps its normalised content, with a style (channel mean) from its own and another face's
    assert not torch.allclose(mixed.mean((2, 3)), plain_stem.mean((2, 3)), atol=1e-3)
    lo = plain_stem.mean((2, 3)).min(0).values - 1e-4
    hi = plain_stem.mean((2, 3)).max(0).values + 1e-4
    assert ((mixed.mean((2, 3)) >= lo) & (mixed.mean((2, 3)) <= hi)).all()


def test_mixstyle_is_reproducible_from_the_runs_generator():
    from fer_core.model.network import build_model
    from training.recipe.mixstyle import attach_mixstyle

    x = torch.randn(4, 1, 48, 48)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("tiny").train()
        attach_mixstyle(model, prob=1.0, alpha=0.1, gen=torch.Generator().manual_seed(3))
        torch.manual_seed(1)  # dropout
        outs.append(model(x).detach())
    torch.testing.assert_close(outs[0], outs[1])


def test_jpeg_compression_leaves_block_artefacts_on_the_chosen_faces_only():
    from helpers import synthetic_face

    faces = torch.from_numpy(np.stack([synthetic_face(i % 7, seed=i) for i in range(8)])).float()
    x = (faces.unsqueeze(1) / 255 - 0.5) / 0.25
    none = AugmentConfig(**{**NO_CHANGE.to_dict(), "jpeg_prob": 0.0})
    torch.testing.assert_close(augment_batch(x, 0.25, none, torch.Generator().manual_seed(0)), x, atol=1e-3, rtol=0)
    cfg = AugmentConfig(**{**NO_CHANGE.to_dict(), "jpeg_prob": 1.0, "jpeg_quality": (15, 15)})
    out = augment_batch(x, 0.25, cfg, torch.Generator().manual_seed(0))
    diff = (out - x).abs().mean(dim=(1, 2, 3)) * 0.25 * 255  # mean change in gray levels
    assert ((diff > 0.5) & (diff < 20)).all()  # compressed, still the same face
    expected = []  # OpenCV's codec at quality 15, face by face
    for face in faces.numpy().astype(np.uint8):
        _, buf = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 15])
        expected.append(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
    torch.testing.assert_close(out, (torch.from_numpy(np.stack(expected)).float().unsqueeze(1) / 255 - 0.5) / 0.25,
                               atol=1e-4, rtol=0)
    half = AugmentConfig(**{**NO_CHANGE.to_dict(), "jpeg_prob": 0.5})
    changed = (augment_batch(x, 0.25, half, torch.Generator().manual_seed(1)) - x).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 0 < int(changed.sum()) < 8
