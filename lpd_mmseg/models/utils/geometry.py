"""Undo the test pipeline's geometry and normalisation on network-size
maps (pure functions)."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def restore_geometry(maps: Tensor, meta: dict, mode: str) -> Tensor:
    """Remove padding, undo a rotation and a flip, resize
    ``(1, K, H, W)`` to the original image size; returns ``(K, H0, W0)``.

    ``RandomRotate90`` records in ``rot90_after_flip`` whether a
    ``RandomFlip`` ran before it; the two are undone in the reverse order
    (without the key, as in metainfo from elsewhere, the flip is taken to
    have come first, the order of the shipped pipelines).  An odd
    ``rot90_k`` swaps the height and width of a non-square image back.

    Args:
        maps (Tensor): ``(1, K, H, W)``.
        meta (dict): the sample's metainfo (``ori_shape``, padding, flip,
            rotation keys).
        mode (str): interpolation mode, e.g. ``'bilinear'``.
    """
    height, width = maps.shape[2:]
    left, right, top, bottom = meta.get(
        'img_padding_size', meta.get('padding_size', [0] * 4))
    maps = maps[:, :, top:height - bottom, left:width - right]
    turns = meta.get('rot90_k', 0)
    if isinstance(turns, bool) or not isinstance(turns, (int, np.integer)):
        raise ValueError(f'rot90_k must be an int (quarter turns), got '
                         f'{turns!r}')
    flip_dims = ()
    if meta.get('flip', False):
        direction = meta.get('flip_direction')
        if direction not in ('horizontal', 'vertical'):
            raise ValueError(f'unknown flip_direction {direction!r}')
        flip_dims = (3, ) if direction == 'horizontal' else (2, )

    def unrotate(m):
        return torch.rot90(m, -int(turns), dims=(2, 3)) if turns % 4 else m

    def unflip(m):
        return m.flip(dims=flip_dims) if flip_dims else m

    if meta.get('rot90_after_flip', True):
        maps = unflip(unrotate(maps))
    else:
        maps = unrotate(unflip(maps))
    size = tuple(meta['ori_shape'][:2])
    if tuple(maps.shape[2:]) != size:
        maps = F.interpolate(maps, size=size, mode=mode,
                             align_corners=False if mode == 'bilinear'
                             else None)
    return maps[0]


def denormalize(inputs: Tensor, preprocessor) -> Tensor:
    """Undo a data preprocessor's normalisation: ``(B, 3, H, W)`` pixel
    values 0..255 (channel order as fed to the network)."""
    if getattr(preprocessor, '_enable_normalize', False):
        inputs = inputs * preprocessor.std + preprocessor.mean
    return inputs.clamp(0, 255)
