"""Layer-wise relevance propagation (Bach et al. 2015), the seed's main comparator.

Own implementation rather than captum's or zennit's: captum's LRP has no rule for LeakyReLU,
RMS pooling or maxout and works through hooks on leaf modules; zennit 0.5.1 requires torchvision,
whose install replaces the pinned torch. The nets of :mod:`proxscope.models.retina` are an
nn.Sequential of modules, so the rules below are applied layer by layer, each with one
autograd call.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.retina import Maxout, RMSPool
from ._checks import check_images

_LINEAR = (nn.Conv2d, nn.Linear, nn.AvgPool2d)
_WINNER = (nn.MaxPool2d, Maxout)
_PASS = (nn.LeakyReLU, nn.ReLU, nn.Dropout, nn.Identity)


def _stabilise(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0)


def _epsilon_rule(fn, a: torch.Tensor, relevance: torch.Tensor, eps: float) -> torch.Tensor:
    """R_i = a_i sum_j w_ij R_j / (z_j + eps sign z_j) for z = fn(a) linear (+ bias) in a."""
    a = a.detach().requires_grad_(True)
    z = fn(a)
    (c,) = torch.autograd.grad(z, a, relevance / _stabilise(z.detach(), eps))
    return a.detach() * c


def _relevance_in(layer: nn.Module, a: torch.Tensor, relevance: torch.Tensor, eps: float):
    if isinstance(layer, _LINEAR):
        return _epsilon_rule(layer, a, relevance, eps)
    if isinstance(layer, _WINNER):
        a = a.detach().requires_grad_(True)
        return torch.autograd.grad(layer(a), a, relevance)[0]
    if isinstance(layer, RMSPool):
        return _epsilon_rule(layer.mean_pool, a * a, relevance, eps)
    if isinstance(layer, nn.Flatten):
        return relevance.reshape(a.shape)
    if isinstance(layer, _PASS):
        return relevance
    raise TypeError(f"lrp has no rule for {type(layer).__name__} layers")


def _sequence(model) -> nn.Sequential:
    layers = model if isinstance(model, nn.Sequential) else getattr(model, "layers", None)
    if not isinstance(layers, nn.Sequential):
        raise TypeError("lrp needs an nn.Sequential, or a model whose forward is its `layers` Sequential")
    return layers


def lrp(model, x: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """Relevance heatmap: the output score R = f_n is redistributed backwards layer by layer,
    conv / dense / mean-pool layers by the epsilon rule R_i = a_i sum_j w_ij R_j / (z_j ± eps),
    max pool and maxout to the winning input, the RMS pool in proportion to a_i² (epsilon rule
    on its mean pool of squares), rectifiers, dropout (eval) and flatten unchanged; the input
    relevance is summed over colour channels. Signed: positive pixels are evidence for a higher
    score. Sum over pixels = f_n minus what biases and eps absorb.

    model: an nn.Sequential or a model with a ``layers`` Sequential whose composition is its
    forward (NetB, AlexNetLike), in eval mode; x: (N, C, H, W) float. Returns (N, H, W)
    float32 in score units. ValueError on bad images; TypeError for a layer without a rule.
    Seed: deep-image-mining-retinopathy-heatmaps.txt Sec. 2.2, 5.4, Table 3 (layer-wise
    relevance propagation).
    """
    layers = _sequence(model)
    activations = [check_images(x)]
    with torch.no_grad():
        for layer in layers:
            activations.append(layer(activations[-1]))
    relevance = activations[-1]
    with torch.enable_grad():
        for layer, a in zip(reversed(layers), reversed(activations[:-1]), strict=True):
            relevance = _relevance_in(layer, a, relevance, eps)
    return relevance.sum(dim=1).float()
