"""Model families: shapes, closed-form parameter counts, gradients, eval/float64, torch.func."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jacrev, vmap

from ddscope.config import ModelConfig
from ddscope.errors import UserError
from ddscope.models import MODELS, count_parameters, make_model
from ddscope.models.blocks import Residual
from ddscope.models.cnn1d import cnn1d_num_params
from ddscope.models.convnet import convnet_num_params
from ddscope.models.mcnn import mcnn_num_params
from ddscope.models.resnet import resnet18_num_params
from ddscope.models.vit import num_heads, patch_size, vit_num_params

CIFAR, MNIST, DIGITS, SIGNAL = (3, 32, 32), (1, 28, 28), (1, 8, 8), (40,)

# (family, input shapes it accepts, small widths)
CASES = [
    ("mlp", [SIGNAL, DIGITS], [1, 5]),
    ("cnn1d", [SIGNAL, (1, 40), (2, 17)], [1, 3]),
    ("convnet", [CIFAR, MNIST, DIGITS], [1, 3]),
    ("mcnn", [CIFAR, MNIST, DIGITS], [1, 3]),
    ("resnet18", [CIFAR, MNIST, DIGITS], [1, 2]),
    ("vit", [CIFAR, MNIST, DIGITS], [1, 4, 33]),
]
PARAMS = [(name, shape, w) for name, shapes, widths in CASES for shape in shapes for w in widths]


def expected_params(name: str, width: int, shape: tuple[int, ...], classes: int, depth: int, bn: bool) -> int:
    if name == "mlp":
        d = 1
        for s in shape:
            d *= s
        return d * width + width + (depth - 1) * (width * width + width) + width * classes + classes
    if name == "cnn1d":
        return cnn1d_num_params(width, shape, classes)
    if name == "convnet":
        return convnet_num_params(width, shape[0], classes, batchnorm=bn)
    if name == "mcnn":
        return mcnn_num_params(width, shape[0], classes)
    if name == "resnet18":
        return resnet18_num_params(width, shape[0], classes, batchnorm=bn)
    return vit_num_params(width, shape, classes, depth=depth)


def build(name, width, shape, classes=10, depth=2, bn=False, seed=0):
    torch.manual_seed(seed)
    return make_model(ModelConfig(name=name, width=width, depth=depth, batchnorm=bn), shape, classes)


def test_registry_names():
    assert {"mlp", "cnn1d", "convnet", "mcnn", "resnet18", "vit"} <= set(MODELS)


@pytest.mark.parametrize("name,shape,width", PARAMS)
def test_shapes_counts_and_gradients(name, shape, width):
    for bn in (False, True) if name in ("convnet", "resnet18") else (False,):  # others ignore it
        model = build(name, width, shape, classes=7, bn=bn)
        assert count_parameters(model) == expected_params(name, width, shape, 7, 2, bn)
        x = torch.randn(3, *shape)
        out = model(x)
        assert out.shape == (3, 7)
        out.square().sum().backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name,shape,width", [p for p in PARAMS if p[2] == 1 or p[0] == "vit"])
def test_eval_mode_and_float64(name, shape, width):
    model = build(name, width, shape, bn=True).double().eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    out = model(x)
    assert out.dtype == torch.float64 and out.shape == (4, 10)
    # In eval mode each sample's output is independent of the rest of the batch.
    torch.testing.assert_close(model(x[:1]), out[:1])


def test_published_resnet18_size():
    """k = 64 is the standard CIFAR ResNet-18 (11,173,962 parameters with BatchNorm)."""
    torch.manual_seed(0)
    with_bn = MODELS["resnet18"](64, CIFAR, 10, batchnorm=True)
    without = MODELS["resnet18"](64, CIFAR, 10, batchnorm=False)
    assert count_parameters(with_bn) == 11_173_962 == resnet18_num_params(64, 3, 10, batchnorm=True)
    # Without BatchNorm each of the 4 800 conv output channels has 1 bias instead of gamma, beta.
    assert count_parameters(without) == 11_173_962 - 4_800 == 11_169_162
    assert sum(isinstance(m, Residual) for m in with_bn.modules()) == 8
    assert sum(isinstance(m, Residual) and m.shortcut is not None for m in with_bn.modules()) == 3


def test_published_small_nets():
    # mnist1d's ConvBase (c = 25, 125 linear inputs) has 5 210 parameters.
    assert count_parameters(MODELS["cnn1d"](25, SIGNAL, 10)) == 5_210
    # Nakkiran et al.'s mCNN at k = 64 on CIFAR-10.
    assert count_parameters(MODELS["mcnn"](64, CIFAR, 10)) == mcnn_num_params(64, 3, 10) == 1_558_026


def test_architecture_details():
    # mCNN keeps BatchNorm even when the config says batchnorm=False; 4x4 final max pool at 32x32.
    m = MODELS["mcnn"](2, CIFAR, 10, batchnorm=False)
    assert sum(isinstance(l, nn.BatchNorm2d) for l in m.modules()) == 4
    assert m[-3].kernel_size == (4, 4)
    # ConvNet: BatchNorm only when asked; two 2x2 average pools; global average pooling.
    c = MODELS["convnet"](2, CIFAR, 10)
    assert not any(isinstance(l, nn.BatchNorm2d) for l in c.modules())
    assert sum(isinstance(l, nn.AvgPool2d) for l in c.modules()) == 2
    assert [l.out_channels for l in c.modules() if isinstance(l, nn.Conv2d)] == [2, 4, 8, 16]
    # cnn1d views flat signals as one channel; strided convs reduce 40 -> 19 -> 10 -> 5.
    n = MODELS["cnn1d"](3, SIGNAL, 10)
    assert isinstance(n[0], nn.Unflatten) and n[-1].in_features == 15
    # ViT: patch 4 for 32x32 and 28x28, patch 2 for 8x8; heads divide the width.
    assert (patch_size(32, 32), patch_size(28, 28), patch_size(8, 8), patch_size(7, 7)) == (4, 4, 2, 1)
    assert [num_heads(k) for k in (1, 31, 64, 96, 100, 192)] == [1, 1, 2, 3, 2, 6]
    v = MODELS["vit"](64, CIFAR, 10, depth=3)
    assert sum(isinstance(l, nn.LayerNorm) for l in v.modules()) == 7
    assert count_parameters(v) == vit_num_params(64, CIFAR, 10, depth=3)


@pytest.mark.parametrize("name", ["cnn1d", "convnet", "mcnn", "resnet18"])
def test_walkable_tree(name):
    """Every module with children is nn.Sequential or Residual (the Lipschitz bound walks it)."""
    shape = SIGNAL if name == "cnn1d" else CIFAR
    model = MODELS[name](2, shape, 10, batchnorm=True)
    for m in model.modules():
        if any(True for _ in m.children()):
            assert isinstance(m, (nn.Sequential, Residual)), type(m).__name__


def test_initialisation_follows_global_rng():
    a, b, c = build("resnet18", 2, DIGITS, seed=1), build("resnet18", 2, DIGITS, seed=1), build("resnet18", 2, DIGITS, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize(
    "name,shape", [("cnn1d", SIGNAL), ("convnet", DIGITS), ("mcnn", DIGITS), ("resnet18", DIGITS), ("vit", DIGITS)]
)
def test_torch_func_input_jacobian(name, shape):
    """vmap(jacrev) over the inputs in eval mode equals per-sample autograd Jacobians (float64)."""
    model = build(name, 2 if name != "vit" else 8, shape, bn=True).double().eval()
    x = torch.randn(3, *shape, dtype=torch.float64)

    def f(xi):  # one sample (*shape) -> logits (C,)
        return model(xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(f))(x)  # (B, C, *shape)
    assert jac.shape == (3, 10, *shape)
    for i in range(3):
        ref = torch.autograd.functional.jacobian(f, x[i])
        torch.testing.assert_close(jac[i], ref)


# Forward-mode AD of LayerNorm/GELU goes through torch's TorchScript decompositions, which warn.
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_vit_jvp_and_double_backward():
    model = build("vit", 8, DIGITS).double().eval()
    x = torch.randn(2, *DIGITS, dtype=torch.float64)
    v = torch.randn_like(x)
    _, tangent = torch.func.jvp(model, (x,), (v,))
    eps = 1e-6
    fd = (model(x + eps * v) - model(x - eps * v)) / (2 * eps)
    torch.testing.assert_close(tangent, fd, rtol=1e-5, atol=1e-7)
    # Hessian-vector products in parameter space need double backward through attention.
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hv = torch.autograd.grad(sum((g * torch.ones_like(g)).sum() for g in grads), params)
    assert all(torch.isfinite(h).all() for h in hv)


@pytest.mark.parametrize(
    "name,shape",
    [("convnet", SIGNAL), ("mcnn", (1, 40)), ("resnet18", SIGNAL), ("vit", SIGNAL), ("cnn1d", CIFAR), ("mcnn", (1, 4, 4))],
)
def test_wrong_input_shape_is_a_user_error(name, shape):
    with pytest.raises(UserError, match=name):
        MODELS[name](2, shape, 10)


def test_every_preset_builds_its_smallest_and_largest_model():
    from ddscope.config import list_presets, load_sweep

    shapes = {"mnist1d": (SIGNAL, 10), "cifar10": (CIFAR, 10), "cifar100": (CIFAR, 100)}
    for preset in list_presets():
        trials = load_sweep(preset).trials()
        for t in (min(trials, key=lambda t: t.model.width), max(trials, key=lambda t: t.model.width)):
            shape, classes = shapes[t.data.name]
            model = make_model(t.model, shape, classes)
            assert count_parameters(model) > 0, preset


@pytest.mark.parametrize("name,shape", [("cnn1d", SIGNAL), ("convnet", DIGITS), ("mcnn", DIGITS), ("resnet18", DIGITS)])
def test_lipschitz_bound_walks_the_family(name, shape):
    """The metric suite's upper bound accepts every ReLU family and bounds the measured ||J||."""
    from ddscope.metrics.lipschitz import lipschitz_upper

    model = build(name, 2, shape, bn=True).double().eval()
    bound = lipschitz_upper(model, shape, num_iters=20, tol=1e-6).value  # loose: bound >> ||J|| here
    x = torch.randn(16, *shape, dtype=torch.float64)
    jac = vmap(jacrev(lambda xi: model(xi.unsqueeze(0)).squeeze(0)))(x).flatten(2)  # (B, C, d)
    assert bound >= torch.linalg.matrix_norm(jac, ord=2).max().item()


def test_lipschitz_bound_of_vit_is_infinite_with_the_unbounded_layers_named():
    import math

    from ddscope.metrics.lipschitz import lipschitz_upper

    bound = lipschitz_upper(build("vit", 8, DIGITS), DIGITS)
    assert math.isinf(bound.value)
    kinds = {kind for _, kind, value in bound.layers if math.isinf(value)}
    assert {"LayerNorm", "SelfAttention"} <= kinds <= {"LayerNorm", "SelfAttention", "Residual"}
