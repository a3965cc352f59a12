"""Checkpoint loading that is safe and strict.

``torch.load`` runs with ``weights_only=True``: only tensors, containers and
the globals allow-listed in :mod:`lpd_mmseg.compat` are accepted, so a
checkpoint whose pickle would run code is refused before any of it runs.
An empty, truncated or otherwise unreadable file gives
:class:`CorruptCheckpointError` naming it.
"""
import hashlib
import os
import pickle
from typing import Dict, List, Tuple

import torch
from torch import nn


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file (checkpoints, shipped weights, slides), read
    in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class UnsafeCheckpointError(RuntimeError):
    """The checkpoint holds pickled objects outside the allow-list."""


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's parameters do not match the model's."""


class CorruptCheckpointError(RuntimeError):
    """The checkpoint file is empty, truncated or not a torch checkpoint."""


#: torch's messages for a file that is not a complete torch checkpoint.
_DAMAGE_MARKERS = ('PytorchStreamReader', 'zip archive', 'Ran out of input',
                   'invalid load key', 'unexpected EOF', 'truncated')


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load(path: str, map_location, mmap: bool):
    try:
        return torch.load(path, map_location=map_location, weights_only=True,
                          mmap=mmap)
    except pickle.UnpicklingError as e:
        if any(m in str(e) for m in _DAMAGE_MARKERS):
            raise _corrupt(path, e) from e
        raise UnsafeCheckpointError(
            f'refused to load {path}: it contains pickled objects that are '
            'not plain weights or mmengine/numpy bookkeeping, and loading '
            'it could run code. Only load checkpoints you trust; a '
            'checkpoint saved by mmengine/lpd_mmseg loads as is. '
            f'(torch: {_first_line(e)})') from e
    except EOFError as e:
        raise _corrupt(path, e) from e
    except RuntimeError as e:
        if mmap and 'mmap can only be used' in str(e):
            return _load(path, map_location, mmap=False)
        if any(m in str(e) for m in _DAMAGE_MARKERS):
            raise _corrupt(path, e) from e
        raise


def _corrupt(path: str, error: BaseException) -> CorruptCheckpointError:
    size = os.path.getsize(path)
    what = 'is empty (0 bytes)' if size == 0 else \
        f'({size} bytes) is truncated or damaged'
    return CorruptCheckpointError(
        f'checkpoint {path} {what}: it is not a complete torch checkpoint, '
        'as left by a save that was interrupted or a copy that did not '
        f'finish (torch: {_first_line(error)}). Use another checkpoint.')


def safe_load_checkpoint(path: str, map_location='cpu') -> dict:
    """``torch.load(path, weights_only=True)`` with clear refusals:
    :class:`UnsafeCheckpointError` for a pickle that could run code,
    :class:`CorruptCheckpointError` for an empty or truncated file."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise _corrupt(path, EOFError('empty file'))
    return _load(path, map_location, mmap=False)


def check_checkpoint_file(path: str) -> None:
    """Raise unless ``path`` is a complete, safe checkpoint.

    The weights are memory-mapped, not read, so this is cheap even for a
    large file; the pickle is fully checked against the allow-list.

    Raises:
        FileNotFoundError: no such file.
        CorruptCheckpointError: empty, truncated or not a checkpoint.
        UnsafeCheckpointError: pickled objects outside the allow-list.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path}: no such file')
    if os.path.getsize(path) == 0:
        raise _corrupt(path, EOFError('empty file'))
    _load(path, 'cpu', mmap=True)


def _state_dict_of(checkpoint) -> Dict[str, torch.Tensor]:
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        checkpoint = checkpoint['state_dict']
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(
            f'checkpoint holds a {type(checkpoint).__name__}, not a state '
            'dict')
    return {
        (k[len('module.'):] if k.startswith('module.') else k): v
        for k, v in checkpoint.items()
    }


def compare_state_dicts(model: nn.Module, state_dict: Dict[str, torch.Tensor]
                        ) -> Tuple[List[str], List[str], List[str]]:
    """Missing keys, unexpected keys, and shape mismatches (as text)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
        f'{tuple(own[k].shape)}' for k in sorted(set(own) & set(state_dict))
        if hasattr(state_dict[k], 'shape')
        and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, mismatched


def check_checkpoint_matches(model: nn.Module, checkpoint, source: str = ''
                             ) -> None:
    """Raise :class:`CheckpointMismatchError` listing every difference.

    Args:
        model: the model to be loaded.
        checkpoint: a path, a checkpoint dict or a state dict.
        source (str): name for the message.
    """
    if isinstance(checkpoint, str):
        source = source or checkpoint
        checkpoint = safe_load_checkpoint(checkpoint)
    missing, unexpected, mismatched = compare_state_dicts(
        model, _state_dict_of(checkpoint))
    if not (missing or unexpected or mismatched):
        return
    lines = [f'checkpoint {source} does not fit this model (another '
             'architecture, class count or prototype count?); nothing was '
             'evaluated.']
    for title, items in (('shape mismatches', mismatched),
                         ('missing from checkpoint', missing),
                         ('unexpected in checkpoint', unexpected)):
        if items:
            shown = items[:15]
            more = f' ... and {len(items) - 15} more' if len(items) > 15 \
                else ''
            lines.append(f'  {title} ({len(items)}): ' + '; '.join(shown) +
                         more)
    raise CheckpointMismatchError('\n'.join(lines))
