"""ddscope: double descent through the smoothness of the learned function."""

__version__ = "0.1.0"
