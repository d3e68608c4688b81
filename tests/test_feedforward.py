import math

import torch
from conftest import rel_err
from torch.func import jacrev, vmap

from rntk_empirical.feedforward import relu_mlp_ntk, relu_mlp_ntk_layers


def test_relu_mlp_ntk_is_the_limit_of_wide_mlps(rng):
    """Seed-averaged empirical NTK of 96 width-512 MLPs (2 hidden layers) within 3%."""
    x = torch.randn(5, 3, generator=rng)
    sw, sb, n, depth = 1.3, 0.2, 512, 2
    dims = [3] + [n] * depth

    def f(p, xi):
        h = xi
        for l in range(depth):
            h = torch.relu(sw / math.sqrt(dims[l]) * p[f"W{l}"] @ h + sb * p[f"b{l}"])
        return sw / math.sqrt(n) * p["v"] @ h + sb * p["c"]

    kernels = []
    for s in range(96):
        g = torch.Generator().manual_seed(s)
        p = {f"W{l}": torch.randn(n, dims[l], generator=g) for l in range(depth)}
        p |= {f"b{l}": torch.randn(n, generator=g) for l in range(depth)}
        p |= {"v": torch.randn(n, generator=g), "c": torch.randn((), generator=g)}
        J = vmap(jacrev(f), in_dims=(None, 0))(p, x)
        kernels.append(sum(j.reshape(5, -1) @ j.reshape(5, -1).T for j in J.values()))
    theta = relu_mlp_ntk(x, depth=depth, sigma_w=sw, sigma_b=sb)
    # entries share each network's random scale, so the seed count matters: 96 give ~1%
    assert rel_err(torch.stack(kernels).mean(0), theta) < 0.03
    # cross-kernel consistency
    torch.testing.assert_close(
        relu_mlp_ntk(x[:2], x, depth=depth, sigma_w=sw, sigma_b=sb),
        theta[:2],
        rtol=1e-12,
        atol=1e-12,
    )


def test_layers_of_one_recursion_are_the_kernels_of_each_depth(rng):
    """relu_mlp_ntk_layers yields depth 1, 2, ... of one recursion: each equal (bitwise) to
    relu_mlp_ntk at that depth, for a cross kernel; a depth's kernel differs from the next."""
    x, y = torch.randn(6, 4, generator=rng), torch.randn(3, 4, generator=rng)
    layers = relu_mlp_ntk_layers(x, y, sigma_w=1.2, sigma_b=0.3)
    got = [next(layers) for _ in range(4)]
    for depth, theta in enumerate(got, start=1):
        assert torch.equal(theta, relu_mlp_ntk(x, y, depth=depth, sigma_w=1.2, sigma_b=0.3))
    assert all(rel_err(a, b) > 1e-3 for a, b in zip(got, got[1:]))


def test_in_place_layers_equal_the_differentiable_ones(rng):
    """Without grad the recursion runs in place (fused dual); with an input that requires
    grad it runs through the relu dual. Same kernels to round-off, and the grad path has one."""
    x = torch.randn(7, 3, generator=rng, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    fast, slow = relu_mlp_ntk_layers(x, sigma_b=0.2), relu_mlp_ntk_layers(xg, sigma_b=0.2)
    for _ in range(4):
        a, b = next(fast), next(slow)
        assert not a.requires_grad and b.requires_grad
        assert rel_err(a, b.detach()) < 1e-14
    (g,) = torch.autograd.grad(b.sum(), xg)
    assert torch.isfinite(g).all() and g.abs().max() > 0
