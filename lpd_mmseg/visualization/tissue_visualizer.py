"""``tools/test.py --show/--show-dir`` overlays drawn with
:mod:`lpd_mmseg.visualization.overlay`: "ground truth | prediction" panels,
semi-transparent colours, a legend, the background visible."""
from typing import Optional

import numpy as np
from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer

from .overlay import overlay_figure


def _labels(pixel_data) -> np.ndarray:
    data = pixel_data.data
    data = data.cpu().numpy() if hasattr(data, 'cpu') else np.asarray(data)
    return data[0] if data.ndim == 3 else data


@VISUALIZERS.register_module()
class TissueSegVisualizer(SegLocalVisualizer):
    """``SegLocalVisualizer`` whose samples are drawn by
    :func:`~lpd_mmseg.visualization.overlay.overlay_figure`.

    The last class of ``dataset_meta['classes']`` is the background.
    Ground-truth values outside the palette (e.g. 255 = ignore) are drawn
    as background.  Files go where mmseg puts them
    (``<save_dir>/vis_data/vis_image/<name>_<step>.png``) or to
    ``out_file``.
    """

    def __init__(self, name: str = 'visualizer',
                 overlay_alpha: float = 0.45, **kwargs):
        super().__init__(name=name, **kwargs)
        self.overlay_alpha = overlay_alpha

    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample=None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       step: int = 0,
                       with_labels: Optional[bool] = True) -> None:
        classes = list(self.dataset_meta.get('classes') or [])
        palette = self.dataset_meta.get('palette')
        if not classes or not palette:
            raise ValueError('TissueSegVisualizer needs dataset_meta with '
                             "'classes' and 'palette'")
        palette = [list(map(int, p)) for p in palette[:len(classes)]]
        background = len(classes) - 1
        panels = []
        if data_sample is not None:
            if draw_gt and 'gt_sem_seg' in data_sample:
                gt = _labels(data_sample.gt_sem_seg).astype(np.int64)
                gt[(gt < 0) | (gt >= len(classes))] = background
                panels.append(('ground truth', gt))
            if draw_pred and 'pred_sem_seg' in data_sample:
                panels.append(('prediction', _labels(
                    data_sample.pred_sem_seg)))
        if not panels:
            panels = [('image', None)]
        title = ''
        if data_sample is not None and 'img_path' in data_sample:
            import os.path as osp
            title = osp.basename(data_sample.img_path)
        figure = overlay_figure(np.asarray(image), panels, classes, palette,
                                background, self.overlay_alpha, title=title)
        if show:
            self.show(figure, win_name=name, wait_time=wait_time)
        if out_file is not None:
            from PIL import Image
            Image.fromarray(figure).save(out_file)
        else:
            self.add_image(name, figure, step)
