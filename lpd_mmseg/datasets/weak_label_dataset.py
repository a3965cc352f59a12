"""Base class for histopathology data sets with image-level training labels.

Layout (both BCSS-WSSS and LUAD-HistoSeg)::

    data_root/
      training/ (or train/)   flat folder, label vector in each file name
      val/img/  val/mask/     images and palette masks of the same name
      test/img/ test/mask/

Training samples carry ``gt_image_label`` parsed from the name and no mask.
Val/test samples carry a mask; their image-level label is derived from it in
the pipeline (``LoadHistoAnnotations``), so scanning a split never opens an
image.
"""
import os
import os.path as osp
import warnings
from typing import List, Optional

from mmseg.datasets import BaseSegDataset

from .label_parsing import LabelParseError, parse_label_from_name

TRAIN_FOLDERS = ('training', 'train')
EMPTY_LABEL_POLICIES = ('error', 'warn')
#: Summary that ``tools/make_pseudo_masks.py`` writes beside its masks; a
#: pseudo-mask folder read as ``seg_map_path`` skips it without a warning.
PSEUDO_MASK_META_FILE = 'pseudo_masks_meta.json'


class DataLoadError(RuntimeError):
    """Loading one sample failed; the message names its files."""


def _list_files(folder: str, suffix: str, suffix_arg: str) -> List[str]:
    """Names of the ``*<suffix>`` files in ``folder``, sorted.

    Hidden entries (``.DS_Store``, macOS ``._x.png``) and the pseudo-mask
    summary file are skipped quietly, other entries (subfolders,
    ``README.txt``) with a warning.  Broken symbolic links and 0-byte
    ``*<suffix>`` files are refused, named as what they are.  Files whose
    suffix differs only in letter case (``x.PNG``) are refused: silently
    skipping them would drop samples.  ``suffix_arg`` names the argument
    that sets ``suffix``, for the messages.
    """
    names, wrong_case, other, broken, empty = [], [], [], [], []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith('.') or e.name == PSEUDO_MASK_META_FILE:
                continue
            is_file = e.is_file()
            if not is_file and e.is_symlink() and not osp.exists(e.path):
                broken.append(f'{e.name} -> {os.readlink(e.path)}')
            elif is_file and e.name.endswith(suffix):
                if e.stat().st_size == 0:
                    empty.append(e.name)
                names.append(e.name)
            elif is_file and e.name.lower().endswith(suffix.lower()):
                wrong_case.append(e.name)
            else:
                other.append(e.name + ('/' if e.is_dir() else ''))
    _refuse_unreadable(folder, sorted(broken), sorted(empty))
    if wrong_case:
        wrong_case.sort()
        raise FileNotFoundError(
            f"{len(wrong_case)} files in '{folder}' end in '{suffix}' only "
            f'up to letter case: {_summarise(wrong_case)}; expected '
            f"'*{suffix}'. Rename them, or set {suffix_arg} to their suffix.")
    if other:
        other.sort()
        warnings.warn(f"ignored {len(other)} entries in '{folder}' that are "
                      f"not '*{suffix}' files: {_summarise(other)}")
    return sorted(names)


def _refuse_unreadable(folder: str, broken: List[str],
                       empty: List[str]) -> None:
    """One error for broken symbolic links and 0-byte files."""
    problems = []
    if broken:
        problems.append(f'{len(broken)} broken symbolic links (their '
                        f'target does not exist): {_summarise(broken)}')
    if empty:
        problems.append(f'{len(empty)} empty (0-byte) files: '
                        f'{_summarise(empty)}')
    if problems:
        raise FileNotFoundError(
            f"unreadable entries in '{folder}': " + '; '.join(problems) +
            '. Restore or remove them (an interrupted copy or download '
            'leaves such files).')


def _summarise(names: List[str], limit: int = 5) -> str:
    shown = ', '.join(names[:limit])
    more = f' and {len(names) - limit} more' if len(names) > limit else ''
    return shown + more


class WeakLabelHistoDataset(BaseSegDataset):
    """Histology patches with image-level labels (train) and masks (val/test).

    Classes in ``METAINFO`` are the tissue classes followed by one background
    entry whose index equals the number of tissue classes (mask value 4).
    The background index is kept in ``gt_sem_seg`` (not mapped to
    ``ignore_index``) so that a metric can either ignore it or count it, the
    two protocols of the literature.

    Args:
        split (str, optional): ``'train'``, ``'val'`` or ``'test'``.  Sets
            ``data_prefix`` from the standard layout (``training/`` or
            ``train/``, refused when both exist; ``<split>/img`` +
            ``<split>/mask``).  Leave None to pass ``data_prefix``
            yourself; a prefix without ``seg_map_path`` means a weakly
            labelled (training) folder.
        empty_label (str): what to do with training names whose label vector
            is all zeros: ``'error'`` (default) refuses the split and lists
            them; ``'warn'`` keeps them (they train as all-negative samples)
            and warns with their count.
        img_suffix (str): image file suffix.  Default ``'.png'``.
        seg_map_suffix (str): mask file suffix.  Default ``'.png'``.
            Files whose suffix differs only in case (``x.PNG``) are
            refused; other entries of a split folder are skipped with a
            warning, hidden ones (``.DS_Store``, ``._x.png``) quietly.
        **kwargs: passed to :class:`mmseg.datasets.BaseSegDataset`.
    """

    #: ``'compact'`` (``[1101]``) or ``'spaced'`` (``[1 1 0 1]``).
    LABEL_FORMAT = 'compact'

    def __init__(self,
                 split: Optional[str] = None,
                 empty_label: str = 'error',
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 data_root: Optional[str] = None,
                 data_prefix: Optional[dict] = None,
                 **kwargs):
        if empty_label not in EMPTY_LABEL_POLICIES:
            raise ValueError(f'empty_label must be one of '
                             f'{EMPTY_LABEL_POLICIES}, got {empty_label!r}')
        self.split = split
        self.empty_label = empty_label
        if data_root is not None and not osp.isdir(data_root):
            raise FileNotFoundError(
                f"data_root '{data_root}' does not exist or is not a folder; "
                'expected the data set root holding training/ (or train/), '
                'val/ and test/')
        if split is not None:
            data_prefix = self._prefix_for_split(split, data_root)
        elif data_prefix is None:
            data_prefix = dict(img_path='', seg_map_path='')
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            data_root=data_root,
            data_prefix=data_prefix,
            **kwargs)

    # ------------------------------------------------------------------ meta
    @property
    def num_tissue_classes(self) -> int:
        return len(self.metainfo['classes']) - 1

    @property
    def background_index(self) -> int:
        return self.num_tissue_classes

    @staticmethod
    def _prefix_for_split(split: str, data_root: Optional[str]) -> dict:
        root = data_root or ''
        if split == 'train':
            found = [f for f in TRAIN_FOLDERS if osp.isdir(osp.join(root, f))]
            if len(found) > 1:
                first, second = (osp.join(root, f) for f in found)
                raise ValueError(
                    f"both '{first}' and '{second}' exist, so split='train' "
                    'cannot tell which holds the training patches; expected '
                    'one of them. Remove one, or pass split=None and '
                    f"data_prefix=dict(img_path='{found[0]}') (or "
                    f"'{found[1]}') explicitly.")
            if found:
                return dict(img_path=found[0])
            raise FileNotFoundError(
                f"no training split in '{root}': expected a flat folder "
                f"'{osp.join(root, TRAIN_FOLDERS[0])}' (or "
                f"'{osp.join(root, TRAIN_FOLDERS[1])}') of labelled patches")
        if split in ('val', 'test'):
            return dict(img_path=f'{split}/img', seg_map_path=f'{split}/mask')
        raise ValueError(
            f"split must be 'train', 'val' or 'test', got {split!r}")

    # ------------------------------------------------------------- scanning
    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path') or None
        if ann_dir is not None and osp.normpath(ann_dir) == osp.normpath(
                self.data_root or '.'):
            # BaseSegDataset joins an empty prefix with data_root.
            ann_dir = None
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f"image folder '{img_dir}' does not exist; expected "
                f'{self._expected_layout()}')
        names = self._image_names(img_dir)
        if ann_dir is None:
            return self._weak_samples(img_dir, names)
        return self._masked_samples(img_dir, ann_dir, names)

    def _expected_layout(self) -> str:
        return ('training/ (or train/) with labelled file names, and '
                '<split>/img + <split>/mask for val and test')

    def _image_names(self, img_dir: str) -> List[str]:
        if self.ann_file:
            with open(self.ann_file) as f:
                stems = [line.strip() for line in f if line.strip()]
            names = [stem + self.img_suffix for stem in stems]
            paths = [osp.join(img_dir, n) for n in names]
            _refuse_unreadable(
                img_dir,
                [f'{n} -> {os.readlink(p)}' for n, p in zip(names, paths)
                 if osp.islink(p) and not osp.exists(p)],
                [n for n, p in zip(names, paths)
                 if osp.isfile(p) and osp.getsize(p) == 0])
            missing = [n for n, p in zip(names, paths) if not osp.isfile(p)]
            if missing:
                raise FileNotFoundError(
                    f"{self.ann_file} lists {len(missing)} images not found "
                    f"in '{img_dir}': {_summarise(missing)}")
            return names
        names = _list_files(img_dir, self.img_suffix, 'img_suffix')
        if not names:
            raise FileNotFoundError(
                f"no '*{self.img_suffix}' images in '{img_dir}'; expected "
                f'{self._expected_layout()}')
        return names

    def _weak_samples(self, img_dir: str, names: List[str]) -> List[dict]:
        num_classes = self.num_tissue_classes
        samples, errors, empty = [], [], []
        for name in names:
            try:
                label = parse_label_from_name(name, num_classes,
                                              self.LABEL_FORMAT)
            except LabelParseError as e:
                errors.append(str(e))
                continue
            if not label.any():
                empty.append(name)
            samples.append(
                dict(
                    img_path=osp.join(img_dir, name),
                    seg_map_path=None,
                    gt_image_label=label,
                    label_map=self.label_map,
                    reduce_zero_label=self.reduce_zero_label,
                    seg_fields=[]))
        if errors:
            raise LabelParseError(
                f"{len(errors)} of {len(names)} training names in '{img_dir}' "
                'have no valid label group:\n  ' + '\n  '.join(errors[:10]) +
                ('\n  ...' if len(errors) > 10 else ''))
        if empty:
            message = (f"{len(empty)} of {len(names)} training names in "
                       f"'{img_dir}' have an all-zero label vector (no tissue "
                       f'class): {_summarise(empty)}')
            if self.empty_label == 'error':
                raise LabelParseError(
                    message + ". Remove them, or set empty_label='warn' to "
                    'train on them as all-negative samples.')
            warnings.warn(message + '; kept as all-negative samples '
                          "(empty_label='warn').")
        return samples

    def _masked_samples(self, img_dir: str, ann_dir: str,
                        names: List[str]) -> List[dict]:
        if not osp.isdir(ann_dir):
            raise FileNotFoundError(
                f"mask folder '{ann_dir}' does not exist; expected a mask "
                f"of the same file name for each image in '{img_dir}'")
        stems = [n[:-len(self.img_suffix)] for n in names]
        mask_names = set(
            _list_files(ann_dir, self.seg_map_suffix, 'seg_map_suffix'))
        expected = {s + self.seg_map_suffix for s in stems}
        no_mask = sorted(s + self.img_suffix for s in stems
                         if s + self.seg_map_suffix not in mask_names)
        no_image = sorted(mask_names - expected) if not self.ann_file else []
        problems = []
        if no_mask:
            problems.append(f"{len(no_mask)} images in '{img_dir}' have no "
                            f"mask in '{ann_dir}': {_summarise(no_mask)}")
        if no_image:
            problems.append(f"{len(no_image)} masks in '{ann_dir}' have no "
                            f"image in '{img_dir}': {_summarise(no_image)}")
        if problems:
            raise FileNotFoundError('; '.join(problems) +
                                    '. Each image needs exactly one mask of '
                                    'the same file name.')
        return [
            dict(
                img_path=osp.join(img_dir, name),
                seg_map_path=osp.join(ann_dir, stem + self.seg_map_suffix),
                label_map=self.label_map,
                reduce_zero_label=self.reduce_zero_label,
                seg_fields=[]) for name, stem in zip(names, stems)
        ]

    # -------------------------------------------------------------- loading
    def prepare_data(self, idx: int):
        """Run the pipeline; a failure names the sample's files."""
        try:
            return super().prepare_data(idx)
        except DataLoadError:
            raise
        except Exception as e:
            info = self.get_data_info(idx)
            files = info['img_path']
            if info.get('seg_map_path'):
                files += f" (mask {info['seg_map_path']})"
            raise DataLoadError(
                f'failed to load sample {idx}: {files}: '
                f'{type(e).__name__}: {e}') from e
