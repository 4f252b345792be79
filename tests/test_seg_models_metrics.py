"""Segmentation nets, metrics (seed eq. 4.1) and the white-blood-cell simulator."""

import numpy as np
import pytest
import torch

from proxscope.layers.tv import tv_softmax
from proxscope.metrics.segmentation import (
    accuracy,
    class_iou,
    confusion_matrix,
    mean_iou,
    regularization_effect,
    segmentation_report,
)
from proxscope.models.segmentation import build
from proxscope.sim.segmentation import add_noise, simulate_dataset, simulate_wbc


@pytest.mark.parametrize("name", ["unet", "runet", "segnet", "rsegnet"])
def test_nets_any_size_probabilities(name):
    torch.manual_seed(0)
    model = build(name, in_channels=1, n_classes=4, base_channels=4, depth=2).eval()
    x = torch.randn(2, 1, 13, 22)
    with torch.no_grad():
        probs = model(x)
        logits = model.logits(x)
    assert probs.shape == (2, 4, 13, 22)
    assert torch.allclose(probs.sum(1), torch.ones(2, 13, 22), atol=1e-5)
    if name.startswith("r"):
        expected = tv_softmax(logits, model.tv.lam, 100, model.config.tau)
    else:
        expected = torch.softmax(logits, 1)
    assert torch.allclose(probs, expected, atol=1e-6)


def test_post_tv_and_tv_iters_options():
    torch.manual_seed(0)
    unet = build("unet", base_channels=4, depth=2).eval()
    runet = build("runet", base_channels=4, depth=2, lam=0.7).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        post = unet(x, post_tv_lam=0.5)
        assert torch.allclose(post, tv_softmax(unet.logits(x), 0.5, 100), atol=1e-6)
        assert torch.allclose(runet(x, tv_iters=0), torch.softmax(runet.logits(x), 1), atol=1e-6)
        assert not torch.allclose(runet(x, tv_iters=5), runet(x, tv_iters=0), atol=1e-4)


def test_confusion_accuracy_iou_on_hand_made_case():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    cm = confusion_matrix(pred, truth, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 3, 1], [0, 0, 0]]
    assert accuracy(pred, truth) == pytest.approx(6 / 8)
    iou = class_iou(pred, truth, 3)
    assert iou[0] == pytest.approx(3 / 4) and iou[1] == pytest.approx(3 / 5) and iou[2] == 0.0
    assert mean_iou(pred, truth, 3) == pytest.approx((3 / 4 + 3 / 5 + 0) / 3)
    assert np.isnan(class_iou(pred, truth, 4)[3])  # absent from both: left out of the mean
    assert mean_iou(pred, truth, 4) == pytest.approx(mean_iou(pred, truth, 3))


def test_regularization_effect_eq_4_1():
    u = np.zeros((6, 10), np.uint8)
    u[:, 4:] = 1  # one vertical edge: |grad u| = 1 on 6 pixels
    assert regularization_effect(u) == pytest.approx(100 * 6 / 60)
    assert regularization_effect(np.full((5, 5), 2)) == 0.0
    speckle = np.zeros((10, 10), np.uint8)
    speckle[5, 5] = 1  # isolated pixel: |grad| = sqrt(2) at (5,5), 1 at (4,5) and (5,4)
    assert regularization_effect(speckle) == pytest.approx(100 * (np.sqrt(2) + 2) / 100)
    report = segmentation_report([u, np.zeros_like(speckle)], [u, speckle])
    assert report["re"] == pytest.approx(5.0)  # per-image mean of 10 and 0
    assert report["re_truth"] == pytest.approx((10.0 + np.sqrt(2) + 2) / 2)
    assert report["accuracy"] == pytest.approx(159 / 160)
    assert report["n_images"] == 2 and report["n_pixels"] == 160


def test_simulator_statistics_and_determinism():
    images, masks = simulate_dataset(6, 96, seed=3)
    again, _ = simulate_dataset(6, 96, seed=3)
    assert np.array_equal(images, again)
    assert images.shape == (6, 96, 96, 3) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    for image, mask in zip(images, masks, strict=True):
        assert set(np.unique(mask)) == {0, 1, 2}
        grey = image.mean(-1)
        # The stain: nucleus darker than cytoplasm, cytoplasm darker than background.
        assert grey[mask == 2].mean() < grey[mask == 1].mean() < grey[mask == 0].mean()
    fractions = np.bincount(masks.ravel(), minlength=3) / masks.size
    assert 0.6 < fractions[0] < 0.95 and fractions[2] < fractions[1]
    # Nucleus lies inside the cell: no nucleus pixel touches the background.
    nucleus = masks == 2
    grown = nucleus.copy()
    grown[:, 1:] |= nucleus[:, :-1]
    grown[:, :-1] |= nucleus[:, 1:]
    assert not (grown & (masks == 0)).any()


def test_noise_statistics():
    rng = np.random.default_rng(0)
    flat = np.full((200, 200, 3), 0.5, np.float32)
    noisy = add_noise(flat, "gaussian", 0.05, rng)
    assert np.std(noisy - flat) == pytest.approx(0.05, rel=0.03)
    sp = add_noise(flat, "salt_pepper", 0.01, rng)
    changed = (sp != flat).any(-1)
    assert changed.mean() == pytest.approx(0.01, rel=0.15)
    assert set(np.unique(sp[changed])) <= {0.0, 1.0}
    assert np.array_equal(add_noise(flat, "clean", 0.0, rng), flat)
    image, _ = simulate_wbc(64, np.random.default_rng(1))
    assert image.shape == (64, 64, 3)
