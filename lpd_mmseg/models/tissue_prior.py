"""Tissue prior: where the slide is bare glass, background must win.

The CAMs of a weakly supervised model say which tissue a pixel resembles,
not whether there is tissue at all, and the background channel
``(1 - max) ** alpha`` is ~0 wherever some class responds.  Bright,
unsaturated pixels are glass on an H&E slide (TPRO thresholds grey > 200
on LUAD-HistoSeg); this module finds them, removes specks smaller than a
few pixels, and gives background the win there.  Pure tensor functions.
"""
import dataclasses
from numbers import Real
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class TissuePrior:
    """Settings of ``test_cfg.tissue_prior``.

    Args:
        brightness (float): a pixel can be glass when its mean of R, G, B
            (0..255) is above this.  Default 200.
        saturation (float): ... and its saturation ``(max - min) / max``
            (0..1) is below this.  Default 0.1.
        min_size (int): glass and tissue blobs thinner than this many
            pixels are removed (a morphological opening of each), so a pale
            nucleus-free spot inside tissue stays tissue and dust on glass
            stays glass.  Default 5; 1 disables it.
    """
    brightness: float = 200.0
    saturation: float = 0.1
    min_size: int = 5

    def __post_init__(self):
        for name in ('brightness', 'saturation'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise TypeError(f'test_cfg.tissue_prior.{name} must be a '
                                f'number, got {value!r}')
        if not 0 <= self.brightness <= 255:
            raise ValueError('test_cfg.tissue_prior.brightness must be in '
                             f'[0, 255], got {self.brightness!r}')
        if not 0 <= self.saturation <= 1:
            raise ValueError('test_cfg.tissue_prior.saturation must be in '
                             f'[0, 1], got {self.saturation!r}')
        if (isinstance(self.min_size, bool)
                or not isinstance(self.min_size, int) or self.min_size < 1):
            raise ValueError('test_cfg.tissue_prior.min_size must be an int '
                             f'>= 1 (pixels), got {self.min_size!r}')


def build_tissue_prior(cfg: Optional[dict]) -> Optional[TissuePrior]:
    """``test_cfg.tissue_prior``: None (off), or a dict of
    :class:`TissuePrior` fields (``dict()`` for the defaults)."""
    if cfg is None:
        return None
    if not isinstance(cfg, dict):
        raise TypeError('test_cfg.tissue_prior must be None or a dict of '
                        f'brightness/saturation/min_size, got {cfg!r}')
    fields = {f.name for f in dataclasses.fields(TissuePrior)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise TypeError(f'test_cfg.tissue_prior has unknown keys {unknown}; '
                        f'expected some of {sorted(fields)}')
    return TissuePrior(**cfg)


def opening(mask: Tensor, size: int) -> Tensor:
    """Binary morphological opening with a ``size x size`` square: erosion
    then dilation; removes blobs thinner than ``size`` pixels.

    Args:
        mask (Tensor): ``(B, 1, H, W)`` bool.

    Returns:
        Tensor: ``(B, 1, H, W)`` bool.
    """
    if size <= 1:
        return mask
    x = mask.float()
    pad_lo, pad_hi = (size - 1) // 2, size // 2
    pad = (pad_lo, pad_hi, pad_lo, pad_hi)
    # erosion = 1 - dilation of the complement; outside the image counts
    # as inside the mask, so that blobs touching the border survive
    eroded = 1 - F.max_pool2d(F.pad(1 - x, pad, value=0.0), size, stride=1)
    opened = F.max_pool2d(F.pad(eroded, pad[::-1], value=0.0), size,
                          stride=1)
    return opened > 0.5


def glass_mask(images: Tensor, prior: TissuePrior) -> Tensor:
    """Where the image is bare glass.

    Args:
        images (Tensor): ``(B, 3, H, W)`` pixel values 0..255.
        prior (TissuePrior): thresholds and speck size.

    Returns:
        Tensor: ``(B, 1, H, W)`` bool, True on glass.
    """
    images = images.float()
    brightness = images.mean(dim=1, keepdim=True)
    high = images.amax(dim=1, keepdim=True)
    low = images.amin(dim=1, keepdim=True)
    saturation = (high - low) / high.clamp_min(1e-6)
    glass = (brightness > prior.brightness) & (saturation < prior.saturation)
    glass = opening(glass, prior.min_size)  # drop glass specks in tissue
    tissue = opening(~glass, prior.min_size)  # drop tissue specks on glass
    return ~tissue


def apply_tissue_prior(scores: Tensor, glass: Tensor) -> Tensor:
    """Background wins on glass: tissue scores 0 and background 1 there.

    Args:
        scores (Tensor): ``(B, C + 1, H, W)``, background last.
        glass (Tensor): ``(B, 1, H, W)`` bool.

    Returns:
        Tensor: ``(B, C + 1, H, W)``, a new tensor.
    """
    on_glass = glass.to(scores.device)
    out = scores.masked_fill(on_glass, 0.0)
    out[:, -1:] = torch.where(on_glass, torch.ones_like(out[:, -1:]),
                              out[:, -1:])
    return out
