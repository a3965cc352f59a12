"""Image-level labels from file names and masks (pure functions).

BCSS-WSSS names a training patch ``<source>+<index>[abcd].png`` (four 0/1
digits, no spaces); LUAD-HistoSeg names it ``<id>-[a b c d].png`` (four
space-separated digits, exactly one space between two digits and none
inside the brackets' ends, as in the published names).  Only the *last*
bracket group of the *file name* is read, never the folder path.
"""
import os
import re
from typing import Iterable, Optional

import numpy as np

LABEL_FORMATS = ('compact', 'spaced')
_BRACKET_GROUP = re.compile(r'\[([^\[\]]*)\]')


class LabelParseError(ValueError):
    """A training file name does not carry a valid label vector."""


def _example(label_format: str, num_classes: int) -> str:
    if label_format == 'compact':
        return f"'name+0[{'1' + '0' * (num_classes - 1)}].png'"
    return f"'name-[{' '.join(['1'] + ['0'] * (num_classes - 1))}].png'"


def parse_label_from_name(path: str,
                          num_classes: int,
                          label_format: str = 'compact') -> np.ndarray:
    """Return the multi-hot label (``int64``, shape ``(num_classes,)``).

    Args:
        path (str): file path or name; only the base name is parsed.
        num_classes (int): expected vector length.
        label_format (str): ``'compact'`` for ``[1101]`` (BCSS-WSSS) or
            ``'spaced'`` for ``[1 1 0 1]`` (LUAD-HistoSeg; single spaces
            only, so ``[1  1 0 1]``, tabs and ``[ 1 1 0 1 ]`` are refused).

    Raises:
        LabelParseError: naming the file, what was found and what was
            expected.
    """
    if label_format not in LABEL_FORMATS:
        raise ValueError(f'label_format must be one of {LABEL_FORMATS}, '
                         f'got {label_format!r}')
    name = os.path.basename(path)
    stem = os.path.splitext(name)[0]
    groups = _BRACKET_GROUP.findall(stem)
    expected = (f'expected a label group like '
                f'{_example(label_format, num_classes)}')
    if not groups:
        raise LabelParseError(
            f"{path}: no '[...]' label group in the file name; {expected}")
    text = groups[-1]
    shown = repr(f'[{text}]')
    if label_format == 'compact':
        tokens = list(text)
        if any(c.isspace() for c in text):
            raise LabelParseError(
                f'{path}: label group {shown} is malformed: the digits must '
                f'be written without spaces; {expected}')
    else:
        tokens = text.split(' ') if text else []
        if not all(t and not any(c.isspace() for c in t) for t in tokens):
            raise LabelParseError(
                f'{path}: label group {shown} is malformed: entries must be '
                'separated by single spaces (no tabs, no double, leading or '
                f'trailing spaces); {expected}')
    if len(tokens) != num_classes:
        raise LabelParseError(
            f'{path}: label group {shown} has {len(tokens)} entries '
            f'where {num_classes} were expected; {expected}')
    bad = sorted({t for t in tokens if t not in ('0', '1')})
    if bad:
        raise LabelParseError(
            f'{path}: label group {shown} contains {bad}; only 0 and 1 '
            f'are allowed; {expected}')
    return np.array([int(t) for t in tokens], dtype=np.int64)


def label_from_mask(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Multi-hot label of the classes ``0..num_classes-1`` present in
    ``mask``.  Other values (background, ignore) do not count."""
    present = np.unique(mask)
    present = present[(present >= 0) & (present < num_classes)]
    label = np.zeros(num_classes, dtype=np.int64)
    label[present.astype(np.int64)] = 1
    return label


def check_mask_values(mask: np.ndarray,
                      allowed: Iterable[int],
                      source: Optional[str] = None) -> None:
    """Raise ``ValueError`` when ``mask`` holds values outside ``allowed``."""
    allowed = sorted(set(int(v) for v in allowed))
    found = np.unique(mask)
    unknown = sorted(set(found.tolist()) - set(allowed))
    if unknown:
        where = f'{source}: ' if source else ''
        raise ValueError(
            f'{where}mask contains values {unknown[:10]} that are not class '
            f'indices; expected only {allowed} (found {found.tolist()[:20]})')
