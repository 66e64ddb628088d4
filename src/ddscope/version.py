"""The package version (the bottom layer: everything may read it)."""

__version__ = "0.1.0"
