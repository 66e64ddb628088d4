"""Neighbourhood sampler specs of the ``volume`` metric group, parsed and checked without torch
(config validation uses them; the sampling itself is :mod:`ddscope.metrics.neighbourhood`).

A spec is ``family@strength`` (a ball around each point) or ``family@s1,s2,...`` (a geodesic path
through ever stronger augmentations, strengths increasing); ``family`` is ``shift``, ``erase`` or
``package.module:function`` (your augmentation ``(x, strength, generator) -> x'``; without ``@``
its strength is 1). docs/design.md §6 defines them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .imports import is_import_spec

SAMPLER_FAMILIES = ("shift", "erase")  # = ddscope.metrics.neighbourhood.FAMILIES


def max_strength(family: str, input_shape: tuple[int, ...]) -> int | None:
    """The largest strength ``family`` takes on one sample of ``input_shape`` (None: no limit
    known, a user's function)."""
    if family == "shift":
        return (min(input_shape[-2:]) if len(input_shape) >= 3 else input_shape[-1]) - 1
    if family == "erase":
        return (min(input_shape[-2:]) if len(input_shape) >= 3 else input_shape[-1] // 2 + 1) - 1
    return None


@dataclass(frozen=True)
class Sampler:
    """A parsed sampler spec: ``family`` (a built-in name or ``package.module:function``), its
    strengths (one: a ball; two or more, increasing: a path) and the label of its store keys."""

    spec: str
    family: str
    strengths: tuple[float, ...]
    function: object = None  # a callable given directly (Python API), else None


    @property
    def is_path(self) -> bool:
        return len(self.strengths) > 1

    @property
    def label(self) -> str:
        name = self.family.rpartition(":")[2] if is_import_spec(self.family) or self.function else self.family
        s = [f"{v:g}" for v in self.strengths]
        return f"{name}_path{s[0]}-{s[-1]}" if self.is_path else f"{name}{s[0]}"


def parse_sampler(spec) -> Sampler:
    """``"shift@1"``, ``"shift@1,2,3,4"``, ``"erase@5"``, ``"package.module:function@0.5"`` (a
    function without ``@`` has strength 1); from Python also a callable ``augment(x, strength,
    generator)`` (a ball of strength 1) or a pair ``(augment, strengths)``. ValueError naming what
    is wrong."""
    if callable(spec) or (isinstance(spec, (tuple, list)) and len(spec) == 2 and callable(spec[0])):
        fn, strengths = (spec, (1.0,)) if callable(spec) else spec
        strengths = (strengths,) if isinstance(strengths, (int, float)) else tuple(strengths)
        name = getattr(fn, "__name__", type(fn).__name__)
        text = f"{name}@{','.join(f'{float(s):g}' for s in strengths)}" if strengths else name
        parsed = parse_sampler(f"user:{text}")  # the strengths' checks, on a stand-in import name
        return Sampler(spec=text, family=f"user:{name}", strengths=parsed.strengths, function=fn)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a sampler is 'name@strength' or 'name@s1,s2,...', got {spec!r}")
    family, at, rest = spec.strip().partition("@")
    if family not in SAMPLER_FAMILIES and not is_import_spec(family):
        raise ValueError(f"unknown sampler family {family!r} in {spec!r}; allowed: {', '.join(SAMPLER_FAMILIES)} or "
                         "'package.module:function' (your augmentation (x, strength, generator) -> x')")
    if not at:
        if family in SAMPLER_FAMILIES:
            raise ValueError(f"sampler {spec!r} needs a strength: '{family}@1' (a ball) or '{family}@1,2,3' (a path)")
        rest = "1"
    try:
        strengths = tuple(float(v) for v in rest.split(","))
    except ValueError:
        raise ValueError(f"sampler {spec!r}: the strengths after '@' must be numbers separated by commas") from None
    if not all(math.isfinite(s) and s > 0 for s in strengths):
        raise ValueError(f"sampler {spec!r}: strengths must be finite and > 0")
    if family in SAMPLER_FAMILIES and any(s != int(s) for s in strengths):
        raise ValueError(f"sampler {spec!r}: '{family}' takes whole numbers (pixels, components)")
    if any(b <= a for a, b in zip(strengths, strengths[1:])):
        raise ValueError(f"sampler {spec!r}: a path's strengths must increase")
    return Sampler(spec=spec.strip(), family=family, strengths=strengths)


def parse_samplers(specs) -> list[Sampler]:
    """Every spec parsed; ValueError on a bad one or on two samplers with the same label."""
    out = [parse_sampler(s) for s in specs]
    labels = [s.label for s in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"two samplers share the label {dup[0]!r}; give each family and strength once")
    return out


def check_sampler(sampler: Sampler, input_shape: tuple[int, ...]) -> None:
    """ValueError when ``sampler`` cannot apply to samples of ``input_shape``: a rank it has no
    axis for, or a strength beyond what one sample has (a shift of the whole length, more
    components erased than there are)."""
    shape = tuple(input_shape)
    if sampler.family in SAMPLER_FAMILIES:
        if len(shape) not in (1, 2, 3):
            raise ValueError(f"sampler {sampler.spec!r} applies to signals (L,), (C, L) and images (C, H, W); the "
                             f"inputs have shape {shape}")
        top = max_strength(sampler.family, shape)
        if max(sampler.strengths) > top:
            what = {"shift": "pixels of shift", "erase": "components erased"}[sampler.family]
            raise ValueError(f"sampler {sampler.spec!r}: at most {top} {what} on inputs of shape {shape}, asked for "
                             f"{max(sampler.strengths):g}")


__all__ = ["SAMPLER_FAMILIES", "Sampler", "check_sampler", "max_strength", "parse_sampler", "parse_samplers"]
