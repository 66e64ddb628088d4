"""TOML files: the presets shipped in ``ddscope/configs``, reading a sweep file, and a minimal
writer for the config documents a run directory keeps (``config.toml``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import UserError

PRESET_DIR = Path(__file__).resolve().parent / "configs"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def read_toml(path_or_preset: str) -> tuple[dict[str, Any], str]:
    """Read a sweep TOML file, or a preset by name. Returns (document, default name)."""
    p = Path(path_or_preset)
    if not p.suffix and not p.exists():
        p = PRESET_DIR / f"{path_or_preset}.toml"
        if not p.exists():
            import difflib

            close = difflib.get_close_matches(str(path_or_preset), list_presets(), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(
                f"unknown preset or config file '{path_or_preset}'{hint}; presets: {', '.join(list_presets())}"
            )
    if not p.exists():
        raise UserError(f"config file not found: {p}")
    if not p.is_file():
        raise UserError(f"config {p} is not a file (give a TOML file or a preset name)")
    try:
        text = p.read_bytes().decode("utf-8")  # TOML is UTF-8 by definition, whatever the locale
    except UnicodeDecodeError as e:
        raise UserError(f"config file {p} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                        "TOML files must be UTF-8") from None
    except OSError as e:
        raise UserError(f"config file {p} cannot be read ({e.strerror})") from None
    try:
        return tomllib.loads(text), p.stem
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {p} is not valid TOML: {' '.join(str(e).split())}") from None


def dumps_toml(d: dict[str, Any]) -> str:
    """Minimal TOML writer for config documents (tables of scalars and lists; a table inside a
    table, such as ``[model] options``, is written inline)."""

    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(str(kk))} = {fmt(vv)}" for kk, vv in v.items()) + "}"
        raise TypeError(v)

    top = [f"{k} = {fmt(v)}" for k, v in d.items() if not isinstance(v, dict)]
    out = top[:]
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"\n[{k}]")
            out += [f"{kk} = {fmt(vv)}" for kk, vv in v.items()]
    return "\n".join(out) + "\n"
