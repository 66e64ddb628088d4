"""Names that become paths: trial ids, sweep names, export run names.

Every name read from a store, a config or the command line that ddscope turns into a file or
folder name passes :func:`check_component` first, so a crafted value (``../../victim``, an
absolute path, a name with a slash or a control character) can never put a file outside the
folder it belongs in. ddscope's own names always pass: trial ids are 12 hex digits, sweep names
are preset or file stems.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError

# One path component: starts with a letter or digit, then letters, digits, '.', '_', '-' (no
# separators, no "..", no leading dot, nothing a shell or a file system treats specially).
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_component(name: object) -> bool:
    """True for a string that is one safe path component (see the module docstring)."""
    return isinstance(name, str) and _COMPONENT.fullmatch(name) is not None and ".." not in name


def check_component(name: object, what: str) -> str:
    """``name`` when :func:`is_component`, else UserError naming ``what`` it is."""
    if not is_component(name):
        raise UserError(f"{what} {name!r} is not a plain name (letters, digits, '.', '_', '-'; no '/', no '..'), "
                        "so it cannot become a file name")
    return name


def inside(base: str | Path, *parts: str, what: str = "name") -> Path:
    """``base / parts…`` after checking that each part is a safe component."""
    return Path(base).joinpath(*(check_component(p, what) for p in parts))


__all__ = ["check_component", "inside", "is_component"]
