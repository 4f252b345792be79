"""Retina system data layer: fundus simulator, seed Sec. 5.1.1 preprocessing, augmentation,
image-level ROC AUC and lesion-level FROC (seed: deep-image-mining-retinopathy-heatmaps.txt)."""

import math

import numpy as np
import pytest
import torch

from proxscope.data.fundus import detect_fov, heatmap_to_image, preprocess_fundus
from proxscope.data.transforms import random_fundus_augment
from proxscope.errors import UserError
from proxscope.metrics import froc, froc_area, heatmap_candidates, roc_auc
from proxscope.sim import fundus as fs

# ----------------------------------------------------------------------------- metrics


def _froc_case():
    """Two 20 x 20 images, three microaneurysm-type lesions, one haemorrhage-type lesion."""
    mask_a = np.zeros((20, 20), np.uint8)
    mask_a[2:5, 2:7] = 1  # L1
    mask_a[15:17, 15:17] = 1  # L2
    mask_b = np.zeros((20, 20), np.uint8)
    mask_b[9:12, 9:12] = 1  # L3
    mask_b[16:19, 2:5] = 2  # a haemorrhage
    heat_a = np.zeros((20, 20))
    heat_a[3, 2] = 0.9  # hits L1
    heat_a[10, 2] = 0.8  # false positive
    heat_a[3, 6] = 0.7  # hits L1 again: not counted
    heat_a[15, 15] = 0.3  # hits L2
    heat_b = np.zeros((20, 20))
    heat_b[3, 15] = 0.6  # false positive
    heat_b[10, 10] = 0.5  # hits L3
    return [heat_a, heat_b], [mask_a, mask_b]


def test_froc_hand_computed():
    heats, masks = _froc_case()
    result = froc(heats, masks, lesion_types=(1, 2, 3, 4), min_distance=1)
    c = result.curves[1]
    # thresholds 0.9, 0.8, 0.7, 0.6, 0.5, 0.3: sensitivity 1/3 from 0 FP/image, 2/3 and 1 at
    # 1 FP/image -> area = (1/3 * 1 + 1 * 9) / 10
    np.testing.assert_allclose(c.fp_per_image, [0, 0, 0.5, 0.5, 1, 1, 1])
    np.testing.assert_allclose(c.sensitivity, [0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    assert c.area == pytest.approx((1 / 3 + 9) / 10)
    assert c.n_lesions == 3
    assert c.sensitivity_at(0.5) == pytest.approx(1 / 3)
    assert c.sensitivity_at(1.0) == pytest.approx(1.0)
    # the haemorrhage is never hit; types 3 and 4 have no lesions (NaN, left out of the mean)
    assert result.per_type[2] == 0.0
    assert math.isnan(result.per_type[3]) and math.isnan(result.per_type[4])
    assert result.mean == pytest.approx(((1 / 3 + 9) / 10 + 0) / 2)
    d = result.as_dict()
    assert d["per_type"]["cotton_wool_spot"]["area"] is None


def test_froc_other_types_and_tolerance():
    heats, masks = _froc_case()
    heats[1][17, 3] = 0.95  # on the haemorrhage
    as_fp = froc(heats, masks, lesion_types=(1, 2), min_distance=1)
    # for type 1 the top candidate is now a false positive: sensitivity 0 until 0.5 FP/image,
    # 1/3 until 1.5, then 1 -> (0 * 0.5 + 1/3 * 1 + 1 * 8.5) / 10
    assert as_fp.per_type[1] == pytest.approx((1 / 3 + 8.5) / 10)
    assert as_fp.per_type[2] == pytest.approx(1.0)
    ignored = froc(heats, masks, lesion_types=(1, 2), min_distance=1, other_types="ignore")
    assert ignored.per_type[1] == pytest.approx((1 / 3 + 9) / 10)
    # a peak one pixel off a lesion hits it only with a tolerance
    mask = np.zeros((10, 10), np.uint8)
    mask[4, 4] = 1
    heat = np.zeros((10, 10))
    heat[4, 5] = 1.0
    assert froc([heat], [mask], lesion_types=(1,), min_distance=1).per_type[1] == 0.0
    assert froc([heat], [mask], lesion_types=(1,), min_distance=1, tolerance=1).per_type[1] == 1.0


def test_froc_no_candidates_no_lesions():
    mask = np.zeros((12, 12), np.uint8)
    mask[5:7, 5:7] = 3
    empty = np.zeros((12, 12), np.uint8)
    flat = np.zeros((12, 12))
    result = froc([flat, flat], [mask, empty], lesion_types=(3, 4))
    assert result.per_type[3] == 0.0  # lesions, but no candidates
    assert math.isnan(result.per_type[4])
    assert result.mean == 0.0
    assert len(heatmap_candidates(flat)[0]) == 0
    with pytest.raises(UserError):
        froc([flat], [np.zeros((5, 5))])


def test_froc_area_clips_at_max_fp():
    # linear from (4, 0.5) to (20, 1): value 0.6875 at x = 10
    area = froc_area(np.array([0, 4, 20.0]), np.array([0, 0.5, 1.0]), max_fp=10)
    assert area == pytest.approx((4 * 0.25 + 6 * (0.5 + 0.6875) / 2) / 10)
    assert froc_area(np.array([0.0]), np.array([0.5])) == pytest.approx(0.5)


def test_roc_auc_hand_case_and_one_class():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([True, False], [0.9, 0.1]) == pytest.approx(1.0)
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    with pytest.raises(UserError):
        roc_auc([0, 1], [0.5])


# ----------------------------------------------------------------------------- simulator


def _lesions(**counts):
    kinds = dict(ma=fs.MICROANEURYSM, h=fs.HAEMORRHAGE, ex=fs.HARD_EXUDATE, cw=fs.COTTON_WOOL,
                 nv=fs.NEOVASCULARISATION)
    return [fs.Lesion(kinds[k], 0.0, 0.0, 1.0) for k, n in counts.items() for _ in range(n)]


def test_grading_rule():
    g = fs.grade_from_lesions
    assert g([]) == 0
    assert g(_lesions(ma=1)) == 1 and g(_lesions(ma=5)) == 1
    assert g(_lesions(ma=6)) == 2
    assert g(_lesions(h=1)) == 2 and g(_lesions(ex=1)) == 2 and g(_lesions(cw=1)) == 2
    assert g(_lesions(h=9, cw=1)) == 2
    assert g(_lesions(h=10)) == 3 and g(_lesions(h=5, cw=2)) == 3
    assert g(_lesions(nv=1)) == 4 and g(_lesions(nv=1, ma=2)) == 4


def test_lesion_plan_grades_back_to_stage():
    rng = np.random.default_rng(1)
    for stage in range(5):
        for _ in range(200):
            plan = fs.lesion_plan(stage, rng)
            lesions = _lesions(ma=plan["ma"], h=plan["haem"], ex=plan["clusters"], cw=plan["cws"],
                               nv=plan["nv"])
            assert fs.grade_from_lesions(lesions) == stage
    assert sum(fs.FundusConfig().stage_probs[2:]) == pytest.approx(0.30)


def test_simulator_labels_prevalence_and_masks():
    config = fs.FundusConfig(size=160)
    samples = [fs.simulate(config, np.random.default_rng([5, i])) for i in range(50)]
    referable = np.mean([s.referable for s in samples])
    assert 0.2 <= referable <= 0.4
    for s in samples:
        assert s.image.shape == (160, 160, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (160, 160) and s.mask.dtype == np.uint8
        assert s.grade == fs.grade_from_lesions(s.lesions)
        assert s.referable == (s.grade >= 2)
        kinds = {les.kind for les in s.lesions if les.kind <= 4}
        assert set(np.unique(s.mask)) - {0} == kinds
        for les in s.lesions:
            if les.kind <= 4:
                assert s.mask[round(les.y), round(les.x)] == les.kind
    assert {s.grade for s in samples} >= {0, 1, 2, 3}
    # the FOV is bright inside, black outside
    s = samples[0]
    cy, cx, r = s.fov
    assert s.image[round(cy), round(cx)].max() > 60
    assert s.image[:3, :3].max() < 12


def test_simulator_reproducible():
    config = fs.FundusConfig(size=128, width=192)
    a = fs.simulate(config, np.random.default_rng(11))
    b = fs.simulate(config, np.random.default_rng(11))
    c = fs.simulate(config, np.random.default_rng(12))
    assert a.image.shape == (128, 192, 3)
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.lesions == b.lesions
    assert a.image.tobytes() != c.image.tobytes()


def test_write_dataset(tmp_path):
    import csv

    from proxscope.data.io import read_image

    fs.write_dataset(tmp_path / "a", 3, size=96, seed=4)
    fs.write_dataset(tmp_path / "b", 3, size=96, seed=4)
    with open(tmp_path / "a" / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["image"] for r in rows] == ["fundus_00000", "fundus_00001", "fundus_00002"]
    for r in rows:
        assert (int(r["grade"]) >= 2) == bool(int(r["referable"]))
        for sub, ext in (("images", "png"), ("lesions", "tif")):
            pa = tmp_path / "a" / sub / f"{r['image']}.{ext}"
            assert pa.read_bytes() == (tmp_path / "b" / sub / f"{r['image']}.{ext}").read_bytes()
        assert read_image(tmp_path / "a" / "images" / f"{r['image']}.png").shape == (96, 96, 3)
        assert read_image(tmp_path / "a" / "lesions" / f"{r['image']}.tif").max() <= 4
    assert not list((tmp_path / "a").rglob("*.part"))


# ----------------------------------------------------------------------------- preprocessing


def test_flat_fov_is_zero_inside():
    image = np.zeros((300, 400, 3), np.uint8)
    yy, xx = np.mgrid[:300, :400]
    image[(yy - 150) ** 2 + (xx - 210) ** 2 <= 120**2] = (200, 90, 40)
    out = preprocess_fundus(image, fov_width=128)
    assert out.image.shape == (3, 128, 128) and out.image.dtype == np.float32
    assert out.fov_mask.sum() > 0.5 * math.pi * 57**2  # eroded disc of radius ~ 0.9 * 64
    assert np.abs(out.image[:, out.fov_mask]).max() < 0.02
    assert (out.image[:, ~out.fov_mask] == 0).all()
    g = out.geometry
    assert g.center == pytest.approx((150, 210), abs=1.5)
    assert g.radius == pytest.approx(120.5, abs=1.5)


def test_bad_images_raise_user_error():
    with pytest.raises(UserError, match="RGB"):
        preprocess_fundus(np.zeros((64, 64), np.uint8))
    with pytest.raises(UserError, match="RGB"):
        preprocess_fundus(np.zeros((64, 64, 2), np.uint8))
    with pytest.raises(UserError, match="field of view"):  # RGBA: alpha dropped, then blank
        preprocess_fundus(np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(UserError, match="field of view"):
        preprocess_fundus(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(UserError, match="field of view"):
        preprocess_fundus(np.full((64, 64, 3), 128, np.uint8))
    bad = np.ones((64, 64, 3), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(UserError, match="NaN"):
        preprocess_fundus(bad)


def test_fov_on_skimage_retina_and_heatmap_back_to_photo():
    skdata = pytest.importorskip("skimage.data")
    photo = skdata.retina()  # 1411 x 1411, FOV diameter ~ 1404 px
    _, (cy, cx), r, _ = detect_fov(photo.astype(np.float32) / 255)
    assert 680 < r < 720
    assert abs(cy - 705) < 15 and abs(cx - 705) < 15
    out = preprocess_fundus(photo, fov_width=256)
    heat = np.zeros((256, 256), np.float32)
    heat[128, 128] = 1.0
    back = heatmap_to_image(heat, out.geometry)
    assert back.shape == photo.shape[:2]
    peak = np.unravel_index(np.argmax(back), back.shape)
    assert abs(peak[0] - cy) < 8 and abs(peak[1] - cx) < 8


def test_fov_on_simulated_cut_frames():
    config = fs.FundusConfig(size=200, width=300, fov_radius=(0.5, 0.56))
    for i in range(3):
        s = fs.simulate(config, np.random.default_rng([3, i]))
        out = preprocess_fundus(s.image, fov_width=96, canvas=112)
        g = out.geometry
        assert g.center == pytest.approx(s.fov[:2], abs=3)
        assert g.radius == pytest.approx(s.fov[2], rel=0.03)
        assert out.image.shape == (3, 112, 112)
        assert heatmap_to_image(np.ones((112, 112)), g).shape == (200, 300)
        stack = heatmap_to_image(np.ones((2, 112, 112)), g)
        assert stack.shape == (2, 200, 300)


# ----------------------------------------------------------------------------- augmentation


def test_augmentation_mask_values_and_reproducible():
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.integers(0, 5, (3, 40, 48)).astype(np.uint8))
    image = torch.rand(3, 3, 40, 48)
    out, m = random_fundus_augment(image, 7, mask=mask)
    assert out.shape == image.shape and m.shape == mask.shape and m.dtype == torch.uint8
    assert set(torch.unique(m).tolist()) <= {0, 1, 2, 3, 4}
    again, m2 = random_fundus_augment(image, torch.Generator().manual_seed(7), mask=mask)
    assert torch.equal(out, again) and torch.equal(m, m2)
    other, _ = random_fundus_augment(image, 8)
    assert not torch.equal(out, other)
    a, _ = random_fundus_augment(image, np.random.default_rng(3))
    b, _ = random_fundus_augment(image, np.random.default_rng(3))
    assert torch.equal(a, b)


def test_augmentation_moves_image_and_mask_together():
    mask = torch.zeros(4, 1, 64, 64, dtype=torch.int64)
    mask[:, :, 20:36, 24:44] = 2
    mask[:, :, 40:50, 10:18] = 4
    image = mask.to(torch.float32)
    out, m = random_fundus_augment(image, 1, mask=mask, contrast=(1.0, 1.0))
    assert m.shape == (4, 1, 64, 64)
    inside = m > 0
    assert inside.sum() > 0.8 * (mask > 0).sum() * 0.85**2
    # bilinear image and nearest mask agree away from the edges
    agree = (out.round() == m.to(out.dtype)).float().mean()
    assert agree > 0.97
    # contrast multiplies: with a fixed rotation-free setting the factor is within range
    flat = torch.ones(2, 3, 16, 16)
    scaled, _ = random_fundus_augment(flat, 2, max_shift=0.0, scale=(1.0, 1.0))
    centre = scaled[:, :, 8, 8]
    assert ((centre > 0.6 - 1e-6) & (centre < 1 / 0.6 + 1e-6)).all()
    assert torch.allclose(centre, centre[:, :1].expand_as(centre))
