"""Figures and overlays: tissue maps drawn over H&E images with a legend,
prototype panels."""
