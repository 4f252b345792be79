"""Sensitivity heatmaps (eqs. 2-3): which pixels the image-level score f_n depends on.

The model is used as it is: call ``model.eval()`` first, or dropout makes the maps random.
"""

from __future__ import annotations

import torch

from ._checks import check_images, scores


def sensitivity(model, x: torch.Tensor, q: float = float("inf")) -> torch.Tensor:
    """omega_{n,x,y} = || (d f_n / d D_{n,x,y,c})_c ||_q, the q-norm over colour channels of the
    input gradient (Simonyan et al. use q = inf).

    x: (N, C, H, W) float images; model (in eval mode): (N, C, H, W) -> (N,) or (N, 1). Returns
    (N, H, W) float32, in score units per input intensity unit. All N maps come from one
    backward pass (images do not interact, so d sum_n f_n / d x_n = d f_n / d x_n).
    ValueError: x not (N, C, H, W) float / empty / non-finite, q < 1, or a model output that is
    not one score per image.
    Seed: deep-image-mining-retinopathy-heatmaps.txt eq. (2).
    """
    if not q >= 1:
        raise ValueError(f"q must be >= 1 (a q-norm), got {q}")
    x = check_images(x).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(scores(model, x).sum(), x)
    return torch.linalg.vector_norm(grad, ord=q, dim=1).float()


def masked_input(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, m∘x): the one-channel multiplicative mask m = 1, (N, 1, H, W) with requires_grad,
    and the model input m∘x (N, C, H, W) (equal to x in value). Feed m∘x to the model; dL/dm is
    then the hue-constrained sensitivity of L.
    ValueError as :func:`sensitivity`. Seed: deep-image-mining-retinopathy-heatmaps.txt eq. (3).
    """
    x = check_images(x)
    m = torch.ones(x.shape[0], 1, *x.shape[2:], dtype=x.dtype, device=x.device, requires_grad=True)
    return m, m * x


def hue_constrained_sensitivity(model, x: torch.Tensor) -> torch.Tensor:
    """pi_{n,x,y} = | d f_n(m∘D) / d m_{n,x,y} | at m = 1: all colour channels of a pixel are
    scaled by one factor, so only hue-preserving changes count. Equals
    | sum_c D_{n,x,y,c} d f_n / d D_{n,x,y,c} |.

    model in eval mode; x: (N, C, H, W) float. Returns (N, H, W) float32 in score units (per
    unit relative intensity change); one backward pass for the batch. ValueError as
    :func:`sensitivity`.
    Seed: deep-image-mining-retinopathy-heatmaps.txt eq. (3).
    """
    with torch.enable_grad():
        m, mx = masked_input(x)
        (grad,) = torch.autograd.grad(scores(model, mx).sum(), m)
    return grad[:, 0].abs().float()


def sparsity_penalty(loss: torch.Tensor, m: torch.Tensor, nu: float) -> torch.Tensor:
    """L_0 = nu · sum_{n,x,y} |d L / d m_{n,x,y}|, differentiable w.r.t. the parameters (double
    backprop with create_graph=True: autograd's backward of this gradient is the seed's
    backward-forward propagation). Use ``loss = mse + sparsity_penalty(mse, m, nu)`` with
    ``m, mx = masked_input(x)`` and ``mse`` computed from ``model(mx)``.

    Normalisation: the plain sum over the batch and the pixels, as the seed's one-line
    TensorFlow version (reduce_sum of |grad|). ``loss`` must be a mean over the N images (as
    ``F.mse_loss`` is by default); then d L / d m_n = (1/N) d l_n / d m_n and L_0 is nu times the
    per-image L1 norm sum_{x,y} |d l_n / d m_n| averaged over the batch: independent of N, and
    not proportional to the pixel count (sum_{x,y} pi is a gradient-times-input total: on the
    same content resampled, NetB at init gave sum pi / |f| of 35-60 at 256 px, 39-49 at 448 px
    for two of three seeds, 440 for one). Measured (simulated lesion/vessel images, 256 px, batch
    8, Adam 1e-3): at initialisation nu · |dL_0/dtheta| / |dL_L/dtheta| is about 0.001-0.002 /
    0.01-0.02 / 0.1-0.2 on NetB and half that on AlexNetLike for nu = 1e-4 / 1e-3 / 1e-2; after
    250 NetB steps, nu = 1e-4 changed nothing (validation MSE 0.150 vs 0.151, sum pi per image
    5.95 vs 5.74), nu = 1e-3 was mild (MSE 0.161, sum pi 5.82) and nu = 1e-2 strong (sum pi 1.39,
    4x sparser, more of it on lesions, MSE 0.213): the seed's Table 2 pattern. AlexNetLike, same
    run: sum pi 9.11 / 9.14 / 9.12 / 6.42 for nu = 0 / 1e-4 / 1e-3 / 1e-2, the share of pi on
    lesions 0.094 / 0.099 / 0.096 / 0.134, MSE unchanged (0.164-0.169). A mean over pixels
    would be 65,536 times weaker at 256 px and leave this nu range without effect.

    loss: scalar tensor; m: the (N, 1, H, W) mask from :func:`masked_input`; nu >= 0 (nu = 0
    gives a zero tensor without building the second-order graph). Returns a scalar tensor.
    ValueError: non-scalar loss, negative nu, or m not requiring grad.
    Seed: deep-image-mining-retinopathy-heatmaps.txt eq. (6), Sec. 4.2-4.3, footnote 4.
    """
    if loss.dim() != 0:
        raise ValueError(f"loss must be a scalar (a mean over the batch), got shape {tuple(loss.shape)}")
    if not nu >= 0:
        raise ValueError(f"nu must be >= 0, got {nu}")
    if not m.requires_grad:
        raise ValueError("m must require grad: build it with masked_input(x)")
    if nu == 0:
        return loss.new_zeros(())
    (grad,) = torch.autograd.grad(loss, m, create_graph=True)
    return nu * grad.abs().sum()
