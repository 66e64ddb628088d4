"""User-style models, written the way researchers write them, for the exactness checks of
``tests/metrics/test_zoo.py``: every number ddscope calls exact or certified is compared with a
brute-force reference on each of them.

``ZOO[name] = (build, input_shape, expect)``: ``build()`` returns a float64 model in eval mode
(tiny, so dense Jacobians and Hessians are cheap); ``expect`` says what the model must give —
``"finite"`` (a finite certified upper bound), ``"inf"`` (no finite global constant exists: +inf)
or ``"refuse"`` (operations without a known constant: one ValueError line naming them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLASSES = 3


class StandardizedMLP(nn.Sequential):
    """An MLP that standardises its input inside an ``nn.Sequential`` subclass (the poster's
    statistic was 4× too small on this: the children were read instead of the forward)."""

    def __init__(self, d: int = 12, h: int = 8):
        super().__init__(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, CLASSES))
        self.register_buffer("scale", torch.full((d,), 0.25))

    def forward(self, x):
        return super().forward(x / self.scale)


class DeepSets(nn.Module):
    """Permutation-equivariant layer x + mean over the set, then pooling: the mean's broadcast."""

    def __init__(self, d: int = 4, h: int = 6):
        super().__init__()
        self.phi = nn.Linear(d, h)
        self.rho = nn.Linear(h, CLASSES)

    def forward(self, x):  # (B, n, d)
        x = x + x.mean(1, keepdim=True)
        h = F.relu(self.phi(x))
        return self.rho(h.sum(1))


class PreActBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(2, c), nn.Conv2d(c, c, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(2, c), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        out = self.c1(F.relu(self.n1(x)))
        out = self.c2(F.relu(self.n2(out)))
        return out + x


class PreActResNet(nn.Module):
    def __init__(self, c: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.block = PreActBlock(c)
        self.head = nn.Linear(c, CLASSES)

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, 2), nn.Linear(2, c)

    def forward(self, x):
        s = x.mean((2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class MobileNetish(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, Hardswish/ReLU6 modules, an SE block."""

    def __init__(self, c: int = 4, se: bool = True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.Hardswish())
        self.expand = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.act = nn.ReLU6()
        self.se = SqueezeExcite(2 * c) if se else nn.Identity()
        self.project = nn.Conv2d(2 * c, c, 1)
        self.head = nn.Linear(c, CLASSES)

    def forward(self, x):
        x = self.stem(x)
        y = self.project(self.se(self.act(self.dw(self.act(self.expand(x))))))
        return self.head((x + y).mean((2, 3)))


class TinyUNet(nn.Module):
    """Down by stride-2 conv, up by ConvTranspose2d, skip by concatenation."""

    def __init__(self, c: int = 3):
        super().__init__()
        self.enc = nn.Conv2d(1, c, 3, padding=1)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        self.dec = nn.Conv2d(2 * c, c, 3, padding=1)
        self.head = nn.Linear(c * 16, CLASSES)

    def forward(self, x):
        e = F.relu(self.enc(x))
        u = F.relu(self.up(F.relu(self.down(e))))
        d = F.relu(self.dec(torch.cat([e, u], dim=1)))
        return self.head(d.flatten(1))


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.n1, self.tok = nn.LayerNorm(dim), nn.Linear(tokens, tokens)
        self.n2, self.ch = nn.LayerNorm(dim), nn.Linear(dim, dim)

    def forward(self, x):  # (B, tokens, dim)
        x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
        return x + F.gelu(self.ch(self.n2(x)))


class MLPMixer(nn.Module):
    def __init__(self, tokens: int = 4, dim: int = 6):
        super().__init__()
        self.block = MixerBlock(tokens, dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        return self.head(self.block(x).mean(1))


class Affine(nn.Module):
    """ResMLP's Aff: alpha ⊙ x + beta (no normalisation)."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha, self.beta = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return self.alpha * x + self.beta


class ResMLP(nn.Module):
    """ResMLP block: Affine, cross-patch Linear over tokens, Affine, MLP; reads ``x.shape``."""

    def __init__(self, tokens: int = 4, dim: int = 6):
        super().__init__()
        self.aff1, self.tok, self.aff2 = Affine(dim), nn.Linear(tokens, tokens), Affine(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 8), nn.ReLU(), nn.Linear(8, dim))
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        b, n, d = x.shape
        x = x + self.tok(self.aff1(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.mlp(self.aff2(x))
        return self.head(x.mean(1).reshape(b, d))


class Attention(nn.Module):
    def __init__(self, dim: int = 6):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        h, _ = self.attn(x, x, x, need_weights=False)
        return self.head((x + h).mean(1))


class Recurrent(nn.Module):
    def __init__(self, cell: str = "gru", d: int = 3, h: int = 5):
        super().__init__()
        self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(d, h, batch_first=True)
        self.head = nn.Linear(h, CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class UpsampleNet(nn.Module):
    def __init__(self, mode: str = "nearest", c: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(1, c, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode=mode) if mode == "nearest" else None
        self.mode = mode
        self.head = nn.Linear(c * 64, CLASSES)

    def forward(self, x):
        h = F.relu(self.conv(x))
        h = self.up(h) if self.up is not None else F.interpolate(h, scale_factor=2, mode=self.mode, align_corners=False)
        return self.head(h.flatten(1))


def spectral_mlp() -> nn.Module:
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, CLASSES))
    nn.utils.parametrizations.spectral_norm(m[0])
    return m


def weight_norm_mlp() -> nn.Module:
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, CLASSES))
    nn.utils.parametrizations.weight_norm(m[0])
    return m


class TiedAutoencoder(nn.Module):
    """``b.weight = a.weight``: one parameter in two layers."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, d)
        self.b.weight = self.a.weight
        self.head = nn.Linear(d, CLASSES)

    def forward(self, x):
        return self.head(F.relu(self.b(F.relu(self.a(x)))))


class Temperature(nn.Module):
    """Logits divided by a learned temperature ``x / self.t``."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, CLASSES))
        self.t = nn.Parameter(torch.tensor([1.5]))

    def forward(self, x):
        return self.body(x) / self.t


class ScaledLogits(nn.Module):
    """A 0-d learned scale ``s * logits`` (crashed Theorem 2's per-sample gradients)."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, CLASSES))
        self.s = nn.Parameter(torch.tensor(1.3))

    def forward(self, x):
        return self.s * self.body(x)


class SharedView(nn.Module):
    """One parameter, viewed once, sliced into two layers."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.w = nn.Parameter(torch.randn(2 * d * d) / d)
        self.d = d
        self.head = nn.Linear(d, CLASSES)

    def forward(self, x):
        W = self.w.view(2 * self.d, self.d)
        h = F.relu(F.linear(x, W[: self.d]))
        h = F.relu(F.linear(h, W[self.d :]))
        return self.head(h)


class FunctionalActs(nn.Module):
    """F.relu6, F.softplus, F.hardswish, F.avg_pool2d: the functional forms of the module table."""

    def __init__(self, c: int = 3):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.head = nn.Linear(c * 4, CLASSES)

    def forward(self, x):
        h = F.hardswish(self.c1(x))
        h = F.softplus(self.c2(F.relu6(h)))
        return self.head(F.avg_pool2d(h, 2).flatten(1))


class ReflectConv1d(nn.Module):
    """Reflection padding (entries copied twice at the borders) and a strided Conv1d."""

    def __init__(self, c: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, c, 3, stride=2)
        self.head = nn.Linear(c * 6, CLASSES)

    def forward(self, x):  # (B, 1, 12)
        h = F.relu(self.conv(F.pad(x, (1, 1), mode="reflect")))
        return self.head(h.flatten(1))


class SmoothMLP(nn.Module):
    def __init__(self, d: int = 6):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 8), nn.GELU(), nn.Linear(8, 8), nn.SiLU(), nn.Linear(8, 8), nn.Mish(),
                                 nn.Linear(8, CLASSES))

    def forward(self, x):
        return self.net(x)


class RepeatResidual(nn.Module):
    """``x.repeat(1, 2)`` into a wider residual branch, in-place add, duplicated indexing."""

    def __init__(self, d: int = 4):
        super().__init__()
        self.fc = nn.Linear(2 * d, 2 * d)
        self.head = nn.Linear(2 * d + 3, CLASSES)
        self.d = d

    def forward(self, x):
        h = x.repeat(1, 2)
        out = self.fc(h)
        out += h  # in place, as torchvision's blocks do
        out = F.relu(out)
        picked = x[:, [0, 0, 1]]  # entry 0 copied twice
        return self.head(torch.cat([out, picked], dim=1))


class ExoticActs(nn.Module):
    def __init__(self, d: int = 6):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 8), nn.PReLU(), nn.Linear(8, 8), nn.ELU(alpha=1.5), nn.Linear(8, 8),
                                 nn.SELU(), nn.Linear(8, CLASSES), nn.LogSoftmax(dim=1))

    def forward(self, x):
        return self.net(x)


class Unknowns(nn.Module):
    """Two operations without a table constant: cumsum and erf."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, CLASSES)

    def forward(self, x):
        return self.b(torch.erf(torch.cumsum(self.a(x), dim=1)))


class Conv3dNet(nn.Module):
    def __init__(self, c: int = 2):
        super().__init__()
        self.conv = nn.Conv3d(1, c, 3, padding=1)
        self.head = nn.Linear(c * 27, CLASSES)

    def forward(self, x):  # (B, 1, 3, 3, 3)
        return self.head(F.leaky_relu(self.conv(x), 0.1).flatten(1))


def _seq(*mods) -> nn.Module:
    return nn.Sequential(*mods)


ZOO = {
    "standardising Sequential subclass": (StandardizedMLP, (12,), "finite"),
    "DeepSets mean broadcast": (DeepSets, (5, 4), "finite"),
    "pre-activation ResNet, GroupNorm": (PreActResNet, (1, 6, 6), "inf"),
    "MobileNet-style with SE": (MobileNetish, (1, 6, 6), "inf"),
    "MobileNet-style without SE": (lambda: MobileNetish(se=False), (1, 6, 6), "finite"),
    "U-Net with ConvTranspose2d": (TinyUNet, (1, 4, 4), "finite"),
    "MLP-Mixer": (MLPMixer, (4, 6), "inf"),
    "ResMLP": (ResMLP, (4, 6), "finite"),
    "multi-head attention": (Attention, (4, 6), "inf"),
    "GRU": (lambda: Recurrent("gru"), (4, 3), "inf"),
    "LSTM": (lambda: Recurrent("lstm"), (4, 3), "inf"),
    "Upsample nearest": (lambda: UpsampleNet("nearest"), (1, 4, 4), "finite"),
    "F.interpolate bilinear": (lambda: UpsampleNet("bilinear"), (1, 4, 4), "finite"),
    "spectral_norm parametrisation": (spectral_mlp, (6,), "finite"),
    "weight_norm parametrisation": (weight_norm_mlp, (6,), "finite"),
    "tied weights": (TiedAutoencoder, (6,), "finite"),
    "division by a parameter": (Temperature, (6,), "finite"),
    "0-d learned scale": (ScaledLogits, (6,), "finite"),
    "one parameter view in two layers": (SharedView, (6,), "finite"),
    "functional relu6/softplus/hardswish": (FunctionalActs, (1, 4, 4), "finite"),
    "reflection-padded Conv1d": (ReflectConv1d, (1, 12), "finite"),
    "GELU/SiLU/Mish MLP": (SmoothMLP, (6,), "finite"),
    "repeat, in-place residual, duplicated index": (RepeatResidual, (4,), "finite"),
    "PReLU/ELU/SELU/LogSoftmax": (ExoticActs, (6,), "finite"),
    "Conv3d, F.leaky_relu": (Conv3dNet, (1, 3, 3, 3), "finite"),
    "cumsum and erf": (Unknowns, (6,), "refuse"),
    "BatchNorm MLP": (lambda: _seq(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, CLASSES)), (6,), "finite"),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The zoo model ``name`` in float64, eval mode, with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = ZOO[name][0]().double()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()
