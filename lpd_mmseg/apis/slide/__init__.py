"""Whole-slide inference: read slides on a target-MPP grid, detect tissue,
run a model over tissue tiles with overlap blending, and write a pyramidal
label TIFF, an overlay, QuPath GeoJSON, per-class areas and a run record.
``tools/segment_slide.py`` is the command line (:mod:`.cli`)."""
from .engine import TileOptions, run_grid
from .folder import segment_folder
from .model import SlideModel, build_slide_model, predict_tiles
from .reader import SlideError, SlideReader, SlideWarning
from .runner import segment_slide

__all__ = [
    'TileOptions', 'run_grid', 'segment_folder', 'SlideModel',
    'build_slide_model', 'predict_tiles', 'SlideError', 'SlideReader',
    'SlideWarning', 'segment_slide'
]
