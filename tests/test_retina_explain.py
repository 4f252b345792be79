"""Heatmap criteria of the deep-image-mining seed (eqs. 2, 3, 6), comparators and the retina nets."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from proxscope.checkpoint import build_model, read_checkpoint, save_checkpoint
from proxscope.explain import (
    grad_cam,
    hue_constrained_sensitivity,
    lrp,
    masked_input,
    occlusion,
    sensitivity,
    sparsity_penalty,
)
from proxscope.models.retina import (
    AlexNetLike,
    AlexNetLikeConfig,
    Maxout,
    NetB,
    NetBConfig,
    RMSPool,
    referable_probability,
)

NETS = ["netb", "alexnet"]


def _net(name):
    """Built inside the test, after conftest's torch.manual_seed(0): the same weights every run."""
    if name == "netb":
        return NetB(NetBConfig(input_size=256)).eval()
    return AlexNetLike(AlexNetLikeConfig(input_size=128)).eval()


def _images(model, n=2):
    size = model.config.input_size
    return 0.2 * torch.randn(n, 3, size, size)


METHODS = {
    "sensitivity": sensitivity,
    "sensitivity_q2": lambda m, x: sensitivity(m, x, q=2),
    "hue_constrained": hue_constrained_sensitivity,
    "lrp": lrp,
    "grad_cam": grad_cam,
    "occlusion": lambda m, x: occlusion(m, x, patch=96, stride=80),
}


class _Linear(nn.Module):
    """f_n(x) = sum_{c,y,x} w_{c,y,x} x_{n,c,y,x}: input gradient w, for every image."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        return (x * self.w).sum(dim=(1, 2, 3))


def test_sensitivity_of_a_linear_model_is_the_channel_norm_of_its_weights():
    w = torch.tensor([[[1.0, -2.0], [0.5, 0.0]], [[-3.0, 1.0], [0.25, -0.5]], [[2.0, 0.0], [-1.0, 0.0]]])
    x = torch.randn(3, 3, 2, 2)
    model = _Linear(w)
    expected_inf = torch.tensor([[3.0, 2.0], [1.0, 0.5]])
    assert torch.equal(sensitivity(model, x), expected_inf.expand(3, 2, 2))
    expected_1 = torch.tensor([[6.0, 3.0], [1.75, 0.5]])
    assert torch.allclose(sensitivity(model, x, q=1), expected_1.expand(3, 2, 2))
    assert torch.allclose(hue_constrained_sensitivity(model, x), (x * w).sum(1).abs())


@pytest.mark.parametrize("name", NETS)
def test_hue_constrained_sensitivity_is_channel_summed_gradient_times_input(name):
    model = _net(name)
    x = _images(model).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    expected = (grad * x).sum(1).abs().detach()
    pi = hue_constrained_sensitivity(model, x.detach())
    assert torch.allclose(pi, expected, rtol=0, atol=1e-5 * float(expected.max()))
    assert float(pi.max()) > 0


def _tiny_net():
    """Every layer type of the retina nets, small enough for a float64 finite-difference check."""
    return nn.Sequential(
        nn.AvgPool2d(2, 2),
        nn.Conv2d(3, 2, 3, padding=1), nn.LeakyReLU(0.33), nn.MaxPool2d(3, 2),
        nn.Conv2d(2, 3, 3, padding=2), nn.LeakyReLU(0.33), RMSPool(3, 2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(12, 4), Maxout(2), nn.Linear(2, 1),
    ).double()


@pytest.mark.parametrize("train", [False, True], ids=["eval", "dropout_fixed_seed"])
def test_sparsity_penalty_gradient_matches_finite_differences(train):
    net = _tiny_net().train(train)
    names = [name for name, _ in net.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in net.parameters())
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    y = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def losses(*theta):
        torch.manual_seed(7)  # the same dropout mask at every evaluation
        m, mx = masked_input(x)
        pred = torch.func.functional_call(net, dict(zip(names, theta, strict=True)), (mx,))[:, 0]
        mse = F.mse_loss(pred, y)
        return mse, sparsity_penalty(mse, m, nu=0.5)

    # both outputs' parameter gradients (the penalty's by double backprop) against central
    # finite differences
    assert float(losses(*params)[1].detach()) > 0
    assert torch.autograd.gradcheck(losses, params, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_sparsity_penalty_is_nu_times_batch_mean_of_per_image_l1():
    net = _tiny_net().eval()
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    m, mx = masked_input(x)
    pred = net(mx)[:, 0]
    mse = F.mse_loss(pred, y)
    pi = hue_constrained_sensitivity(lambda t: net(t)[:, 0], x).double()
    per_image = (2 * (pred - y).abs().detach()[:, None, None] * pi).sum((1, 2))
    penalty = sparsity_penalty(mse, m, nu=1e-3)
    assert torch.allclose(penalty.detach(), 1e-3 * per_image.mean(), rtol=1e-5)
    assert float(sparsity_penalty(mse, m, nu=0.0)) == 0.0


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("method", list(METHODS))
def test_heatmaps_are_input_size_and_batch_equals_one_at_a_time(name, method):
    model = _net(name)
    x = _images(model, n=3)
    batch = METHODS[method](model, x)
    assert batch.shape == (3, *x.shape[-2:]) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all() and float(batch.abs().max()) > 0
    for n in range(3):
        single = METHODS[method](model, x[n : n + 1])[0]
        assert torch.allclose(batch[n], single, rtol=1e-4, atol=1e-5 * float(batch[n].abs().max()))


def test_occlusion_of_a_one_pixel_model_lights_up_that_pixel():
    w = torch.zeros(3, 12, 12)
    w[1, 5, 7] = 2.0
    model = _Linear(w)
    x = torch.rand(2, 3, 12, 12) + 0.5
    heat = occlusion(model, x, patch=3, stride=1)
    for n in range(2):
        assert divmod(int(heat[n].argmax()), 12) == (5, 7)
        assert float(heat[n, 5, 7]) == pytest.approx(2 * float(x[n, 1, 5, 7]), rel=1e-5)
        far = torch.ones(12, 12, dtype=torch.bool)
        far[3:8, 5:10] = False  # pixels sharing no 3x3 window with (5, 7)
        assert float(heat[n][far].abs().max()) == 0.0


@pytest.mark.parametrize("name", NETS)
def test_lrp_conserves_the_score_without_biases(name):
    model = _net(name)
    # freshly built nets have zero biases: with eps -> 0 the relevance sums to the score
    x = _images(model)
    relevance = lrp(model, x, eps=1e-12)
    with torch.no_grad():
        f = model(x)
    assert torch.allclose(relevance.sum((1, 2)), f, rtol=1e-3, atol=1e-4)


def test_lrp_of_a_linear_layer_is_weight_times_input():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 1, bias=False))
    x = torch.randn(2, 3, 2, 2)
    expected = (x * model[1].weight.view(3, 2, 2)).sum(1)
    assert torch.allclose(lrp(model, x, eps=1e-9), expected, atol=1e-5)
    with pytest.raises(TypeError, match="no rule for Tanh"):
        lrp(nn.Sequential(nn.Tanh(), nn.Flatten(), nn.Linear(12, 1)), x)


def test_grad_cam_is_nonnegative_and_uses_last_conv():
    model = _net("alexnet")
    assert model.last_conv is model.layers[11]
    assert float(grad_cam(model, _images(model)).min()) >= 0.0


TABLE_1_NET_B = [224, 225, 112, 56, 57, 56, 27, 28, 27, 28, 13, 14, 13, 14, 6, 5, 2]
ALEXNET_448 = [224, 55, 27, 27, 13, 13, 13, 13, 6]


@pytest.mark.parametrize(
    "cls,config,expected",
    [(NetB, NetBConfig, TABLE_1_NET_B), (AlexNetLike, AlexNetLikeConfig, ALEXNET_448)],
    ids=["netb", "alexnet"],
)
def test_map_sizes_at_448_px_follow_table_1_and_alexnet(cls, config, expected):
    model = cls(config(input_size=448)).eval()
    feats, sizes = _images(model, n=1), []
    for layer in model.layers:
        if isinstance(layer, nn.Flatten):
            break
        feats = layer(feats)
        if not isinstance(layer, nn.LeakyReLU):
            sizes.append(feats.shape[-1])
    assert sizes == expected


def test_checkpoint_round_trip_and_size(tmp_path):
    for model in map(_net, NETS):
        path = save_checkpoint(tmp_path / f"{type(model).__name__}.safetensors", model)
        assert path.stat().st_size < 1_000_000
        loaded = build_model(read_checkpoint(path)).eval()
        x = _images(model)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_bad_input_errors():
    model = _net("alexnet")
    with pytest.raises(ValueError, match=r"expected images \(N, 3, 128, 128\)"):
        model(torch.zeros(1, 1, 128, 128))
    with pytest.raises(ValueError, match="NaN"):
        sensitivity(model, torch.full((1, 3, 128, 128), float("nan")))
    with pytest.raises(ValueError, match="q must be"):
        sensitivity(model, _images(model), q=0.5)
    with pytest.raises(ValueError, match="one score per image"):
        hue_constrained_sensitivity(lambda t: t.mean((2, 3)), _images(model))
    with pytest.raises(ValueError, match="input_size too small"):
        NetB(NetBConfig(input_size=128))
    assert torch.equal(referable_probability(torch.tensor([-0.5, 0.3, 1.7])), torch.tensor([0.0, 0.3, 1.0]))


def test_explain_imports_no_task_or_cli_layer():
    code = (
        "import sys, proxscope; assert 'torch' not in sys.modules; import proxscope.explain; "
        "bad = [m for m in sys.modules if m.startswith(('proxscope.tasks', 'proxscope.cli'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
