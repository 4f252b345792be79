"""The shared helpers of the Task contract: input expansion, file pairing, output checks, image
preparation, augmentation that carries points and masks, pooled scores, detection settings."""

import numpy as np
import pytest

from proxscope.checkpoint import detection_settings
from proxscope.data.io import check_writable, expand_inputs, pair_files, write_table
from proxscope.data.transforms import prepare_image, random_crop_rot_flip
from proxscope.errors import UserError
from proxscope.metrics import match_points, pool_matches
from proxscope.tasks.base import Task


def test_expand_inputs_file_folder_glob(tmp_path):
    for name in ("b.tif", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert expand_inputs(tmp_path / "b.tif") == [tmp_path / "b.tif"]
    assert [p.name for p in expand_inputs(tmp_path)] == ["a.png", "b.tif"]
    assert [p.name for p in expand_inputs(str(tmp_path / "*.tif"))] == ["b.tif"]
    with pytest.raises(UserError, match="image not found"):
        expand_inputs(tmp_path / "missing.tif")
    with pytest.raises(UserError, match="no file matches"):
        expand_inputs(str(tmp_path / "*.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        expand_inputs(tmp_path / "empty")


def test_pair_files_by_name_and_per_image_folders(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    for folder, names in ((pred, ["a", "b", "c"]), (truth, ["b", "c", "d"])):
        for n in names:
            (folder / n).mkdir(parents=True)
            (folder / n / "cells.csv").write_text("y,x\n")
    with pytest.raises(UserError, match="1 truth file\\(s\\) .* have no prediction .*: d"):
        pair_files(pred, truth, (".csv",), filename="cells.csv")
    (pred / "d").mkdir()
    (pred / "d" / "cells.csv").write_text("y,x\n")
    pairs = pair_files(pred, truth, (".csv",), filename="cells.csv")
    assert sorted(pairs) == ["b", "c", "d"]
    assert pairs["b"] == (pred / "b" / "cells.csv", truth / "b" / "cells.csv")
    (tmp_path / "p2").mkdir()
    (tmp_path / "p2" / "a.csv").write_text("y,x\n")
    with pytest.raises(UserError, match="no prediction"):
        pair_files(tmp_path / "p2", truth, (".csv",))


def test_check_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_writable(tmp_path / "new" / "deeper" / "out.tif") == tmp_path / "new" / "deeper" / "out.tif"
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "out.tif")
    with pytest.raises(UserError, match="it is a file"):
        check_writable(tmp_path / "file", is_dir=True)
    with pytest.raises(UserError, match="it is a folder"):
        check_writable(tmp_path, is_dir=False)


def test_write_table_union_of_columns(tmp_path):
    path = write_table(tmp_path / "t.csv", [{"image": "a", "n": 1}, {"image": "b", "f1": 0.5}])
    assert path.read_text().splitlines() == ["image,n,f1", "a,1,", "b,,0.5"]


def test_prepare_image_layouts_scales_and_errors():
    rng = np.random.default_rng(0)
    rgb = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    out = prepare_image(rgb)
    assert out.shape == (3, 20, 30) and out.dtype == np.float32
    assert np.isclose(np.percentile(out, 99.8), 1.0, atol=1e-4)
    assert prepare_image(rgb[..., 0])[0].shape == (20, 30)
    assert prepare_image(np.dstack([rgb, rgb[..., :1]])).shape == (3, 20, 30)  # RGBA drops alpha
    grey = np.arange(400, dtype=np.uint16).reshape(20, 20)
    scaled = prepare_image(grey, channels=(1,), normalize="max")
    assert scaled.max() == pytest.approx(255.0) and scaled[0, 0, 0] == 0.0
    assert prepare_image(grey, pad_to=32).shape == (1, 32, 32)
    per_channel = prepare_image(np.stack([grey, 10 * grey, grey]), per_channel=True)
    assert np.allclose(per_channel[0], per_channel[1], atol=1e-5)
    assert not np.allclose(prepare_image(np.stack([grey, 10 * grey, grey]))[0], per_channel[0])
    cases = [
        (np.zeros((20, 20), bool), {}, "unsupported pixel type"),
        (np.zeros((2, 2, 20, 20)), {}, "expected a 2-D image"),
        (rgb, {"channels": (1,)}, "expected a grey .* channels that differ"),
        (np.full((20, 20), np.nan, np.float32), {}, "NaN or Inf"),
        (np.ones((5, 20)), {}, "too small"),
        (np.zeros((20, 20)), {"normalize": "max"}, "blank"),
    ]
    for image, kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            prepare_image(image, source="img.tif", **kwargs)


def test_random_crop_rot_flip_carries_masks_and_points():
    image = np.zeros((2, 40, 50), np.float32)
    mask = np.zeros((40, 50), np.int64)
    points = np.array([[12.0, 31.0], [1.0, 1.0]])
    image[:, [12, 1], [31, 1]] = 1.0
    mask[[12, 1], [31, 1]] = 7
    for seed in range(40):
        crop, (crop_mask,), crop_points = random_crop_rot_flip(
            np.random.default_rng(seed), image, 24, targets=(mask,), points=points)
        assert crop.shape == (2, 24, 24) and crop_mask.shape == (24, 24)
        lit = np.argwhere(crop[0] == 1.0)
        assert (np.argwhere(crop_mask == 7) == lit).all()
        assert sorted(map(tuple, crop_points.round().astype(int))) == sorted(map(tuple, lit))
    same = [random_crop_rot_flip(np.random.default_rng(3), image, 24)[0] for _ in range(2)]
    assert np.array_equal(*same)


def test_pool_matches_sums_counts():
    a = match_points(np.array([[0, 0], [10, 10]]), np.array([[0, 1]]), radius=2)
    b = match_points(np.zeros((0, 2)), np.array([[5, 5], [9, 9]]), radius=2)
    pooled = pool_matches([a, b])
    assert (pooled.tp, pooled.fp, pooled.fn) == (1, 1, 2)
    assert pooled.f1 == pytest.approx(2 / (2 + 1 + 2))


def test_detection_settings_new_slot_and_legacy_keys():
    assert detection_settings({"detection": {"threshold": 2.5, "sigma": 1.0}})["threshold"] == 2.5
    legacy = detection_settings({"threshold": 8.8, "detect_sigma": 1.5, "vote_threshold": 0.4})
    assert (legacy["threshold"], legacy["sigma"], legacy["vote_threshold"]) == (8.8, 1.5, 0.4)
    assert detection_settings({}, sigma=2.0) == {"threshold": 0.0, "sigma": 2.0, "vote_threshold": None}


def test_default_pool_is_the_mean_of_numeric_scores():
    pooled = Task().pool({"a": {"f1": 0.5, "n": 2, "ok": True}, "b": {"f1": 1.0, "note": "x"}})
    assert pooled == {"f1": 0.75, "n": 2.0}


def test_checkpoints_get_the_usual_file_permissions(tmp_path):
    import os

    import torch

    from proxscope.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 1)
    model.config = {"in_features": 2}
    path = save_checkpoint(tmp_path / "m.safetensors", model)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_json_outputs_are_strict_nan_and_inf_become_null(tmp_path):
    import json

    from proxscope.data.io import to_json, write_json

    payload = {"threshold": float("inf"), "auc": float("nan"), "n": np.int64(3), "xs": [np.float32(0.5)]}
    assert json.loads(to_json(payload)) == {"threshold": None, "auc": None, "n": 3, "xs": [0.5]}
    text = write_json(tmp_path / "r.json", payload).read_text()
    assert "Infinity" not in text and "NaN" not in text


def test_evaluate_an_empty_prediction_counts_every_true_cell_missed(tmp_path, capsys):
    import json

    from proxscope.cli import main

    (tmp_path / "pred.csv").write_text("y,x,score\n")
    (tmp_path / "truth.csv").write_text("y,x\n1,2\n5,6\n9,9\n")
    for task in ("spots", "cells"):
        capsys.readouterr()
        assert main([task, "evaluate", "--pred", str(tmp_path / "pred.csv"), "--truth",
                     str(tmp_path / "truth.csv")]) == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["tp"], result["fp"], result["fn"], result["f1"]) == (0, 0, 3, 0.0), task


def test_one_layout_rule_with_shapes_as_found():
    rng = np.random.default_rng(1)
    grey = rng.random((20, 24)).astype(np.float32)
    rgb = rng.random((20, 24, 3)).astype(np.float32)
    # colour last and colour first are the same image
    assert np.array_equal(prepare_image(rgb), prepare_image(np.moveaxis(rgb, -1, 0)))
    # grey saved as RGB / RGBA (equal channels) is grey where grey is expected, colour otherwise
    as_rgb = np.dstack([grey] * 3)
    for layout in (as_rgb, np.moveaxis(as_rgb, -1, 0), np.dstack([as_rgb, np.ones_like(grey)])):
        assert np.array_equal(prepare_image(layout, channels=(1,)), prepare_image(grey, channels=(1,)))
    assert prepare_image(as_rgb).shape == (3, 20, 24)
    cases = [
        (np.zeros((512, 512, 2), np.uint16), (1,), "expected a grey (H, W) image, got shape (512, 512, 2)"),
        (np.zeros((4, 32, 32)), (1, 3), "got shape (4, 32, 32) (a stack of 4 planes? give one)"),
        (np.zeros((4, 32, 32)), (3,), "expected an RGB (H, W, 3) image, got shape (4, 32, 32)"),
        (grey, (3,), "expected an RGB (H, W, 3) image, got shape (20, 24)"),
    ]
    for image, channels, message in cases:
        with pytest.raises(UserError) as info:
            prepare_image(image, channels=channels, source="img.tif")
        assert str(info.value).startswith("img.tif: ") and message in str(info.value)
    # without expected counts (a stack of any length) the short axis is the channel axis
    from proxscope.data.transforms import to_channels_first

    assert to_channels_first(np.zeros((30, 40, 4))).shape == (4, 30, 40)
    assert to_channels_first(np.zeros((4, 30, 40))).shape == (4, 30, 40)


def test_blank_and_hot_pixel_images_normalise_robustly():
    blank = prepare_image(np.zeros((32, 32), np.uint16))
    assert np.isfinite(blank).all() and (blank == 0).all()
    image = np.random.default_rng(0).normal(1000, 10, (64, 64)).astype(np.uint16)
    hot = image.copy()
    hot[3, 3] = 65535
    diff = np.abs(prepare_image(image) - prepare_image(hot))[0]
    diff[3, 3] = 0
    assert diff.max() < 0.05  # the other pixels keep their scale


def test_rescale_to_diameter_and_back():
    from proxscope.data.transforms import points_to_original, rescale_to_diameter, resize

    image = np.zeros((1, 100, 60), np.float32)
    image[0, 40, 20] = 1.0
    scaled, scale = rescale_to_diameter(image, diameter=20, trained_diameter=10)
    assert scaled.shape == (1, 50, 30) and scale == (0.5, 0.5)
    peak = np.argwhere(scaled[0] == scaled[0].max())
    assert np.allclose(points_to_original(peak, scale), [[40.5, 20.5]])  # within half a pixel
    assert resize(scaled, (100, 60)).shape == (1, 100, 60)
    same, unit = rescale_to_diameter(image, None, 10)
    assert np.array_equal(same, image) and unit == (1.0, 1.0)
    with pytest.raises(UserError, match="--diameter must be a positive"):
        rescale_to_diameter(image, -3, 10)
    with pytest.raises(UserError, match="at least 8x8"):
        rescale_to_diameter(image, 100, 5)
