"""Every operator in OPERATORS passes the adjoint identity, and lipschitz() matches ||A||^2."""

import pytest
import torch

from proxscope.operators import FFTConv, MatrixOperator, MultiConv2d, ValidConv
from proxscope.operators.lines import LineProjection
from proxscope.operators.spod import FullSPoDConv, SPoDConv

D64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# name -> (factory, input shape without batch)
OPERATORS = {
    "matrix": (lambda: MatrixOperator(torch.randn(20, 35, generator=_gen(), dtype=D64)), (35,)),
    "multiconv": (lambda: MultiConv2d(torch.randn(4, 5, 5, generator=_gen(), dtype=D64)), (4, 13, 17)),
    "multiconv-rect": (lambda: MultiConv2d(torch.randn(2, 3, 7, generator=_gen(), dtype=D64)), (2, 9, 11)),
    "validconv": (lambda: ValidConv(torch.randn(3, 3, 4, 5, generator=_gen(), dtype=D64)), (3, 14, 12)),
    "fftconv": (lambda: FFTConv(torch.randn(3, 9, 11, generator=_gen(), dtype=D64)), (3, 16, 12)),
    "spodconv": (lambda: SPoDConv(torch.randn(4, 3, generator=_gen(), dtype=D64),
                                  torch.randn(5, generator=_gen(1), dtype=D64)), (5, 11, 9)),
    "fullspodconv": (lambda: FullSPoDConv(torch.randn(3, 3, 5, 4, generator=_gen(), dtype=D64)),
                     (3, 12, 10)),
    "lines": (lambda: LineProjection(9, 7, 5), (9, 7)),
}


def _dense(op, in_shape):
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n, dtype=D64).reshape(n, *in_shape)
    return op(basis).reshape(n, -1).T  # (m, n)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_adjoint_identity(name):
    factory, in_shape = OPERATORS[name]
    op = factory()
    x = torch.randn(3, *in_shape, generator=_gen(1), dtype=D64)
    y = torch.randn_like(op(x))
    lhs = (op(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert abs(lhs - rhs) / abs(lhs) < 1e-10


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_lipschitz_is_largest_singular_value_squared(name):
    factory, in_shape = OPERATORS[name]
    op = factory()
    sigma_max = torch.linalg.svdvals(_dense(op, in_shape))[0].item()
    assert op.lipschitz(in_shape, n_iter=1000, tol=1e-10) == pytest.approx(sigma_max**2, rel=1e-2)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_batched_equals_per_sample(name):
    factory, in_shape = OPERATORS[name]
    op = factory()
    x = torch.randn(4, *in_shape, generator=_gen(2), dtype=D64)
    batched = op(x)
    single = torch.cat([op(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-12)


def test_multiconv_is_a_true_convolution():
    # A delta at (r, c) in channel k must reproduce the kernel h_k centred there (not flipped).
    kernel = torch.arange(15, dtype=D64).reshape(1, 3, 5)
    op = MultiConv2d(kernel)
    x = torch.zeros(1, 1, 9, 9, dtype=D64)
    x[0, 0, 4, 4] = 1
    out = op(x)[0, 0]
    assert torch.equal(out[3:6, 2:7], kernel[0])


def test_fftconv_equals_multiconv():
    kernels = torch.randn(3, 7, 9, generator=_gen(3), dtype=D64)
    x = torch.randn(2, 3, 20, 15, generator=_gen(4), dtype=D64)
    y = torch.randn(2, 1, 20, 15, generator=_gen(5), dtype=D64)
    direct, fft = MultiConv2d(kernels), FFTConv(kernels)
    assert torch.allclose(direct(x), fft(x), atol=1e-10)
    assert torch.allclose(direct.adjoint(y), fft.adjoint(y), atol=1e-10)


def test_validconv_output_shape():
    op = ValidConv(torch.randn(18, 18, 8, 6, dtype=D64))
    assert op(torch.zeros(2, 18, 40, 30, dtype=D64)).shape == (2, 18, 33, 25)


def test_even_kernel_rejected():
    with pytest.raises(ValueError, match="odd"):
        MultiConv2d(torch.zeros(1, 4, 5))


def test_lipschitz_cache_follows_weight_changes():
    op = MatrixOperator(torch.eye(3, dtype=D64))
    assert op.lipschitz((3,)) == pytest.approx(1.0)
    with torch.no_grad():
        op.matrix.mul_(2)
    assert op.lipschitz((3,)) == pytest.approx(4.0)
