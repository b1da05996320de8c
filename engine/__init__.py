"""pxgl: a GPU-first, pixel-native inference engine."""

__version__ = "0.1.0"
