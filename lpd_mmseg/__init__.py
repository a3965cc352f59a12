"""LPD for MMSegmentation: learnable prototypes with diversity
regularisation for weakly supervised histopathology segmentation.

Importing this package (``custom_imports=dict(imports=['lpd_mmseg'])`` in a
config) first applies the compatibility fixes in :mod:`lpd_mmseg.compat`,
then registers datasets, transforms, models, losses, metrics and hooks into
MMSegmentation's registries.
"""
from .compat import apply_compat
from .version import __version__

apply_compat()

from . import datasets, engine, evaluation, models, visualization  # noqa: E402,F401

__all__ = ['__version__']
