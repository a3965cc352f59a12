"""Figures and overlays: tissue maps drawn over H&E images with a legend,
prototype panels."""
from .overlay import blend_labels, draw_legend, overlay_figure, save_figure
from .tissue_visualizer import TissueSegVisualizer

__all__ = ['blend_labels', 'draw_legend', 'overlay_figure', 'save_figure',
           'TissueSegVisualizer']
