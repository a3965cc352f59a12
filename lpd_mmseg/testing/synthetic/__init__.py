"""Synthetic H&E-like tissue patches written in the BCSS-WSSS layout.

The real BCSS-WSSS data cannot be downloaded on every machine, so tests,
demos and benchmarks use data generated here.  It is meant to be a fair
stand-in for the difficulty of weakly supervised tissue segmentation, not
clean vector art:

* **Composition.**  Each patch holds 1-4 tissue classes drawn from a
  BCSS-like co-occurrence table (:data:`COMPOSITIONS`): TUM and STR are the
  most common and often appear together, LYM mostly with STR, NEC mostly
  with TUM.  Some patches also hold white background (class 4).  Each
  block of :data:`FORCED_SINGLE_PERIOD` indices starts with one
  single-class patch of each tissue class, so any split of at least four
  patches holds single-label patches of every class.
* **Layout.**  One smooth random field per class (coarse blobs plus finer
  wiggles); each pixel takes the class of the largest field, which gives
  irregular region shapes.  A class that would cover fewer than
  :func:`min_class_pixels` pixels is removed and its pixels go to the
  runner-up field, so *every tissue class in a mask covers at least that
  many pixels* and the label in a training name (the classes in the mask)
  never hinges on a few stray pixels.
* **Texture.**  Each class is painted with one of several morphologies
  (:data:`MORPHOLOGIES`), as haematoxylin and eosin concentration maps:
  nuclei are ellipses of varied size, shape and darkness, collagen is a
  warped stripe pattern, lumens and clefts are unstained.  Classes share
  colour statistics on purpose (small-cell tumour nests vs lymphocytes,
  ghost-cell necrosis vs loose stroma, debris vs tumour sheets), so texture
  and structure, not mean colour, tell them apart.
* **Staining.**  The maps are turned into RGB with the Beer-Lambert law
  using per-slide stain vectors and gains (:class:`StainStyle`), then
  blurred and given sensor noise.

Lengths (nucleus radii, fibre periods) are given in pixels for a 224 px
patch and multiplied by ``sqrt(size / 224)``, so smaller patches show a
slightly smaller field of view at a slightly coarser scale.

Determinism: every random draw of a sample comes from a generator seeded by
``(seed, split, index)``; slide styles and names from ``(seed, split, slide
or ROI)``.  Output bytes therefore do not depend on the number of workers
(they may change with other numpy, OpenCV or Pillow versions).

Modules, in the order a patch is made: :mod:`.params` (constants, argument
checks), :mod:`.stain` (slide stain style, random fields), :mod:`.drawing`
and :mod:`.morphologies` (stain maps per class), :mod:`.layout` (the mask),
:mod:`.render` (one patch), :mod:`.naming` (seeds and file names),
:mod:`.writer` (jobs and files), :mod:`.manifest` (the record of a set and
the output folder checks), :mod:`.generate` (the entry point).  Class names
and colours come from :mod:`lpd_mmseg.datasets.palette`.
"""
from .generate import (
                       format_summary,
                       generate_synthetic_bcss,
                       make_params,
                       overall_pixel_frequencies,
)
from .layout import sample_composition, sample_layout
from .naming import (
                       composition_for_index,
                       label_string,
                       plan_split,
                       slide_style,
)
from .params import (
                       BACKGROUND,
                       BACKGROUND_PROBABILITY,
                       CLASS_MIXES,
                       CLASS_NAMES,
                       COMPOSITIONS,
                       FORCED_SINGLE_PERIOD,
                       GENERATOR_VERSION,
                       MANIFEST_NAME,
                       MAX_BACKGROUND_FRACTION,
                       MAX_SIZE,
                       MIN_CLASS_FRACTION,
                       MIN_SIZE,
                       MORPHOLOGIES,
                       OWNED_ENTRIES,
                       PALETTE,
                       SPLITS,
                       TISSUE_CLASSES,
                       min_class_pixels,
)
from .render import SyntheticPatch, render_patch, render_sample
from .stain import StainStyle, fine_noise, sample_style, smooth_field

__all__ = [
    'generate_synthetic_bcss', 'make_params', 'format_summary',
    'overall_pixel_frequencies', 'render_sample', 'render_patch',
    'SyntheticPatch', 'sample_composition', 'sample_layout', 'sample_style',
    'StainStyle', 'smooth_field', 'fine_noise', 'slide_style', 'plan_split',
    'label_string', 'composition_for_index', 'min_class_pixels',
    'CLASS_NAMES', 'PALETTE', 'TISSUE_CLASSES', 'BACKGROUND', 'MORPHOLOGIES',
    'COMPOSITIONS', 'CLASS_MIXES', 'BACKGROUND_PROBABILITY',
    'MAX_BACKGROUND_FRACTION',
    'FORCED_SINGLE_PERIOD', 'MIN_CLASS_FRACTION', 'MIN_SIZE', 'MAX_SIZE',
    'GENERATOR_VERSION', 'MANIFEST_NAME', 'SPLITS', 'OWNED_ENTRIES'
]
