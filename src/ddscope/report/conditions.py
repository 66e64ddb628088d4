"""The report's vocabulary for a grid of trials: which axes replicate a trial (pooled into
mean ± std), which is the x-axis, and the *conditions* — every other varying axis, kept apart in
every figure and table — with their labels (``noise 15 %, n_train 300``)."""

from __future__ import annotations

# Axes that replicate a trial (seeds of the initialisation and of the data draw): pooled into
# mean ± std. Every other varying axis is a *condition*, kept apart in every figure and table.
REPLICATE_AXES = ("seed", "data.seed")
# The x-axis of the report: width, or the training-set size when width is fixed (sample-wise
# double descent).
X_AXES = ("model.width", "data.n_train")


def x_axis(varying: list[str]) -> str:
    """``model.width`` unless it is fixed while ``data.n_train`` varies."""
    return "data.n_train" if "data.n_train" in varying and "model.width" not in varying else "model.width"


def condition_keys(flats: list[dict], varying: list[str], x: str) -> list[str]:
    """``data.noise`` plus every varying config key that is neither a replicate nor the x-axis
    (``varying`` comes from :func:`ddscope.config.varying_keys`, which never holds a key
    outside the trial id)."""
    keys = ["data.noise"] if flats and "data.noise" in flats[0] else []
    return keys + [k for k in varying if k not in keys and k != x and k not in REPLICATE_AXES]


def condition_label(key: str, value) -> str:
    short = key.split(".")[-1]
    if key == "data.noise" and isinstance(value, (int, float)):
        return f"noise {100 * float(value):g} %"
    return f"{short} {value:g}" if isinstance(value, float) else f"{short} {value}"


__all__ = ["REPLICATE_AXES", "X_AXES", "condition_keys", "condition_label", "x_axis"]
