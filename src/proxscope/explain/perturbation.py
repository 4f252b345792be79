"""Occlusion and Grad-CAM comparators, through captum (imported on first use)."""

from __future__ import annotations

import torch

from ._checks import check_images, scores


def occlusion(
    model, x: torch.Tensor, patch: int = 16, stride: int = 8, baseline: float = 0.0, batch: int = 16
) -> torch.Tensor:
    """Zeiler-Fergus occlusion: a patch×patch square (all channels) slides with ``stride`` and is
    set to ``baseline`` (0 = the background of a preprocessed fundus image); each pixel gets the
    mean score drop f_n(x) − f_n(x occluded) over the windows covering it (captum.attr.Occlusion;
    windows at the far edge are clipped so every pixel is covered). Signed: positive where
    hiding the pixel lowers the score. Costs about (H/stride)·(W/stride) forward passes per
    image, ``batch`` occluded copies at a time.

    model in eval mode; x: (N, C, H, W) float. Returns (N, H, W) float32 in score units.
    ValueError on bad images, patch larger than the image, or stride not in [1, patch].
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 2.2 (Zeiler and Fergus, 2014).
    """
    from captum.attr import Occlusion

    x = check_images(x)
    if not 1 <= patch <= min(x.shape[-2:]) or not 1 <= stride <= patch:
        raise ValueError(f"need 1 <= stride <= patch <= image size, got patch {patch}, stride {stride}")
    c = x.shape[1]
    with torch.no_grad():
        attr = Occlusion(lambda t: scores(model, t)).attribute(
            x, sliding_window_shapes=(c, patch, patch), strides=(c, stride, stride),
            baselines=baseline, perturbations_per_eval=batch,
        )
    return attr[:, 0].float()


def grad_cam(model, x: torch.Tensor, layer=None) -> torch.Tensor:
    """Grad-CAM: ReLU(sum_k alpha_k A_k) with A_k the output maps of ``layer`` (default
    ``model.last_conv``) and alpha_k the spatial mean of d f_n / d A_k, bilinearly upsampled to
    the input size (captum.attr.LayerGradCam + LayerAttribution.interpolate). Non-negative, as
    coarse as the layer's maps.

    model in eval mode; x: (N, C, H, W) float. Returns (N, H, W) float32 in score units.
    ValueError on bad images; AttributeError if no layer is given and the model has no
    ``last_conv``.
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 2.2 (class activation maps; a
    comparator the seed does not evaluate).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    x = check_images(x)
    layer = model.last_conv if layer is None else layer
    with torch.enable_grad():
        cam = LayerGradCam(lambda t: scores(model, t), layer).attribute(x, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    return cam[:, 0].float()
