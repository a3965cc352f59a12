"""Split-level IoU / Dice for tissue segmentation, under a named protocol."""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log
from mmengine.structures import BaseDataElement
from mmseg.registry import METRICS
from prettytable import PrettyTable

from ..datasets.palette import save_palette_mask
from .confusion import (
    check_background_protocol,
    check_positive_int,
    confusion_matrix,
    tissue_metrics,
)

PROTOCOL_SOURCES = dict(count='TPRO/PBIP/LPD', ignore='WSSS-Tissue/MLPS')


def _to_percent(value: float) -> float:
    """Fraction -> percent rounded to 2 decimals (NaN stays NaN)."""
    return round(float(value) * 100, 2)


def _label_map(data: object, field: str, img_path: str) -> torch.Tensor:
    """``(1, H, W)`` or ``(H, W)`` label data -> ``(H, W)`` tensor."""
    tensor = data if isinstance(data, torch.Tensor) else torch.as_tensor(
        np.asarray(data))
    if tensor.dim() == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 2:
        raise ValueError(f'{img_path}: {field} must have shape (1, H, W) or '
                         f'(H, W), got {tuple(tensor.shape)}')
    return tensor


@METRICS.register_module()
class TissueIoUMetric(BaseMetric):
    """IoU and Dice of tissue segmentation over a whole split.

    One confusion matrix is accumulated over the split (not a mean of
    per-image scores) and scored with :func:`tissue_metrics` under one of the
    two background protocols of the literature (``docs/datasets.md``):

    * ``'count'`` (TPRO, PBIP, LPD): ground-truth background pixels are
      scored; tissue predicted on them is a false positive of that tissue.
      FwIoU is weighted over all C+1 rows; background IoU and Dice are
      reported as ``IoU.<bg>`` / ``Dice.<bg>`` but never enter the means.
    * ``'ignore'`` (WSSS-Tissue, MLPS): ground-truth background pixels are
      excluded.  A tissue pixel predicted as background is still a miss.

    ``mIoU`` and ``mDice`` are the NaN-ignoring mean over the C tissue
    classes; a class with neither ground truth nor prediction is NaN and left
    out.  ``dataset_meta['classes']`` lists the C tissue classes followed by
    the background (e.g. ``('TUM', 'STR', 'LYM', 'NEC', 'BACK')``);
    predictions use index C for background.

    Each processed sample adds one small ``(C+1, C+1)`` count matrix to
    ``self.results`` (never the prediction itself), so memory does not grow
    with image size, and mmengine's result collection can drop the samples
    that a distributed sampler pads onto the last ranks.

    Args:
        background (str): ``'count'`` (default) or ``'ignore'``.
        num_tissue_classes (int, optional): C.  Default: one less than the
            number of classes in ``dataset_meta``.
        ignore_index (int): ground-truth value skipped entirely (e.g. 255
            padding).  Default 255.
        output_dir (str, optional): if set, every prediction is written to
            ``<output_dir>/<image basename>.png`` as a palette ('P') PNG of
            class indices coloured with ``dataset_meta['palette']``.  The
            folder is created if missing; a file that was already there when
            the metric was built is never overwritten (FileExistsError).
            ``tools/test.py --out DIR`` sets this.
        format_only (bool): only write predictions (needs ``output_dir``);
            no ground truth is read and no score is computed.  Default False.
        keep_results (bool): accepted because ``tools/test.py --out`` sets
            it; written predictions are always kept, so it must be True.
        prefix (str, optional): prefix of the metric names.  Default None.
        collect_device (str): ``'cpu'`` or ``'gpu'``, how results are
            gathered across ranks.  Default ``'cpu'``.
        **kwargs: passed to :class:`mmengine.evaluator.BaseMetric`
            (e.g. ``collect_dir``).
    """

    def __init__(self,
                 background: str = 'count',
                 num_tissue_classes: Optional[int] = None,
                 ignore_index: int = 255,
                 output_dir: Optional[str] = None,
                 format_only: bool = False,
                 keep_results: bool = True,
                 prefix: Optional[str] = None,
                 collect_device: str = 'cpu',
                 **kwargs) -> None:
        check_background_protocol(background)
        if num_tissue_classes is not None:
            num_tissue_classes = check_positive_int(num_tissue_classes,
                                                    'num_tissue_classes')
        if format_only and output_dir is None:
            raise ValueError('format_only=True only writes predictions; set '
                             'output_dir as well')
        if not keep_results:
            raise ValueError(
                'keep_results=False is not supported: predictions written to '
                'output_dir are always kept; leave output_dir unset to write '
                'nothing')
        super().__init__(collect_device=collect_device, prefix=prefix,
                         **kwargs)
        self.background = background
        self._num_tissue_classes = num_tissue_classes
        self.ignore_index = ignore_index
        self.output_dir = output_dir
        self.format_only = format_only
        # Files found in output_dir before we wrote anything are not ours.
        self._foreign_files = self._prepare_output_dir(output_dir)
        self._written_this_pass = set()

    # ------------------------------------------------------------- metadata
    @property
    def num_tissue_classes(self) -> int:
        """C, from the argument or from ``dataset_meta['classes']``."""
        classes = (self.dataset_meta or {}).get('classes')
        if self._num_tissue_classes is None:
            if not classes:
                raise ValueError(
                    'TissueIoUMetric needs num_tissue_classes or a '
                    "dataset_meta with 'classes' (tissue classes followed "
                    'by the background)')
            return len(classes) - 1
        if classes and len(classes) != self._num_tissue_classes + 1:
            raise ValueError(
                f'num_tissue_classes={self._num_tissue_classes} does not '
                f'match dataset_meta classes {tuple(classes)}: expected '
                f'{self._num_tissue_classes} tissue classes plus background')
        return self._num_tissue_classes

    def _class_names(self) -> List[str]:
        """Names of the C tissue classes followed by the background."""
        classes = (self.dataset_meta or {}).get('classes')
        if classes:
            return [str(c) for c in classes]
        return [f'class{i}' for i in range(self.num_tissue_classes)
                ] + ['background']

    # ---------------------------------------------------------- predictions
    @staticmethod
    def _prepare_output_dir(output_dir: Optional[str]) -> set:
        if output_dir is None:
            return set()
        if osp.exists(output_dir) and not osp.isdir(output_dir):
            raise NotADirectoryError(
                f"output_dir '{output_dir}' exists and is not a folder")
        os.makedirs(output_dir, exist_ok=True)
        with os.scandir(output_dir) as entries:
            return {e.name for e in entries}

    def _palette(self) -> List[List[int]]:
        palette = (self.dataset_meta or {}).get('palette')
        if not palette:
            raise ValueError('writing predictions needs '
                             "dataset_meta['palette'] (one RGB triple per "
                             'class)')
        return [[int(v) for v in rgb] for rgb in palette]

    def _save_prediction(self, pred: torch.Tensor, img_path: str) -> None:
        """Write one prediction as a palette PNG named after its image."""
        name = osp.splitext(osp.basename(img_path))[0] + '.png'
        path = osp.join(self.output_dir, name)
        if name in self._foreign_files:
            raise FileExistsError(
                f"'{path}' was already in output_dir before this evaluation "
                'started; refusing to overwrite it. Choose a new or empty '
                'output folder or remove the old predictions.')
        if name in self._written_this_pass:
            raise ValueError(
                f"two images of this split are named '{name}' (the second "
                f"is '{img_path}'); their predictions would overwrite each "
                'other in output_dir')
        save_palette_mask(pred.cpu().numpy(), path, self._palette())
        self._written_this_pass.add(name)

    # ------------------------------------------------------------ BaseMetric
    def process(self, data_batch: object,
                data_samples: Sequence[dict]) -> None:
        """Add one confusion matrix per sample to ``self.results``.

        Args:
            data_batch (object): the batch from the dataloader (unused).
            data_samples (Sequence[dict]): model outputs, as dicts (or
                :class:`SegDataSample`) with ``pred_sem_seg.data`` of shape
                ``(1, H, W)`` and, unless ``format_only``, ``gt_sem_seg``.
        """
        num_classes = self.num_tissue_classes + 1
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            img_path = sample.get('img_path', '<unknown image>')
            pred = _label_map(sample['pred_sem_seg']['data'], 'pred_sem_seg',
                              img_path)
            if not self.format_only:
                if 'gt_sem_seg' not in sample:
                    raise ValueError(
                        f'{img_path} has no gt_sem_seg: this split has no '
                        'masks to score against. To only write predictions, '
                        'set format_only=True and output_dir.')
                gt = _label_map(sample['gt_sem_seg']['data'], 'gt_sem_seg',
                                img_path)
                try:
                    conf = confusion_matrix(pred, gt, num_classes,
                                            self.ignore_index)
                except ValueError as e:
                    raise ValueError(f'{img_path}: {e}') from e
                self.results.append(conf)
            if self.output_dir is not None:
                if 'img_path' not in sample:
                    raise ValueError('writing predictions to output_dir '
                                     'needs img_path in every data sample')
                self._save_prediction(pred, img_path)

    def evaluate(self, size: int) -> dict:
        """Score the split (see :meth:`BaseMetric.evaluate`); a later pass
        may then rewrite its own prediction files."""
        try:
            return super().evaluate(size)
        finally:
            self._written_this_pass.clear()

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Sum the per-sample matrices, score them and log a class table.

        Args:
            results (list): the ``(C+1, C+1)`` matrices of all samples.

        Returns:
            dict[str, float]: ``mIoU``, ``mDice``, ``FwIoU``, ``aAcc`` and
            ``IoU.<class>`` / ``Dice.<class>`` for each tissue class (and
            for the background under ``'count'``), in percent with 2
            decimals.  Empty with ``format_only``.
        """
        logger = MMLogger.get_current_instance()
        if self.format_only:
            print_log(f'predictions written to {self.output_dir}',
                      logger=logger)
            return {}
        if not results:
            raise ValueError('TissueIoUMetric processed no samples with '
                             'ground truth; nothing to score')
        num_tissue = self.num_tissue_classes
        conf = np.sum(np.stack(results), axis=0)
        scores = tissue_metrics(conf, num_tissue, self.background)
        names = self._class_names()

        metrics = {
            key: _to_percent(scores[key])
            for key in ('mIoU', 'mDice', 'FwIoU', 'aAcc')
        }
        for name, iou, dice in zip(names, scores['IoU'], scores['Dice']):
            metrics[f'IoU.{name}'] = _to_percent(iou)
            metrics[f'Dice.{name}'] = _to_percent(dice)
        if self.background == 'count':
            metrics[f'IoU.{names[-1]}'] = _to_percent(scores['background_IoU'])
            metrics[f'Dice.{names[-1]}'] = _to_percent(
                scores['background_Dice'])

        print_log(self._protocol_line(scores, num_tissue), logger=logger)
        table = self._class_table(scores, metrics, names)
        print_log('per class results:\n' + table.get_string(), logger=logger)
        return metrics

    # -------------------------------------------------------------- logging
    def _protocol_line(self, scores: dict, num_tissue: int) -> str:
        source = PROTOCOL_SOURCES[self.background]
        if self.background == 'count':
            detail = ('gt background pixels are scored (tissue predicted on '
                      'them is a false positive); FwIoU over all '
                      f'{num_tissue + 1} rows')
        else:
            detail = (f"gt background pixels are excluded "
                      f"({scores['background_gt_pixels']} pixels); FwIoU "
                      f'over the {num_tissue} tissue rows')
        return (f'background protocol: {self.background} ({source}); '
                f'{detail}; mIoU/mDice = mean over the {num_tissue} tissue '
                f"classes; {scores['num_pixels']} pixels scored")

    def _class_table(self, scores: dict, metrics: dict,
                     names: List[str]) -> PrettyTable:
        table = PrettyTable()
        table.field_names = ['Class', 'IoU', 'Dice', 'GT pixels', 'in mean']
        for name, pixels in zip(names, scores['gt_pixels']):
            table.add_row([
                name, metrics[f'IoU.{name}'], metrics[f'Dice.{name}'],
                int(pixels), 'yes'
            ])
        background = names[-1]
        if self.background == 'count':
            table.add_row([
                background, metrics[f'IoU.{background}'],
                metrics[f'Dice.{background}'], scores['background_gt_pixels'],
                'no'
            ])
        else:
            table.add_row([
                background, '-', '-', scores['background_gt_pixels'],
                'excluded'
            ])
        return table
