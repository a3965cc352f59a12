import numpy as np
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from ..label_parsing import check_mask_values, label_from_mask


@TRANSFORMS.register_module()
class LoadHistoAnnotations(LoadAnnotations):
    """Load a palette mask of class indices, check it, derive the label.

    Behaves like mmseg's ``LoadAnnotations`` and additionally

    - passes samples without a mask through untouched (weakly labelled
      training patches, or images given to an inferencer);
    - refuses masks that are not single-channel, whose size differs from
      the image, or that hold values other than ``0..num_classes`` (tissue
      classes plus the background index ``num_classes``);
    - sets ``gt_image_label`` (multi-hot over the tissue classes) from the
      mask when the sample has none.

    Args:
        num_classes (int): number of tissue classes.  Default 4.
        extra_values (tuple[int]): other values a mask may hold (e.g. 255
            for an ignore label).  Default ``()``.
        imdecode_backend (str): default ``'pillow'``, which reads palette
            indices, not palette colours.
    """

    def __init__(self,
                 num_classes: int = 4,
                 extra_values: tuple = (),
                 imdecode_backend: str = 'pillow',
                 **kwargs):
        super().__init__(imdecode_backend=imdecode_backend, **kwargs)
        self.num_classes = num_classes
        self.allowed_values = tuple(range(num_classes + 1)) + tuple(
            extra_values)

    def transform(self, results: dict) -> dict:
        path = results.get('seg_map_path')
        if path is None:
            return results
        results = super().transform(results)
        mask = results['gt_seg_map']
        if mask.ndim != 2:
            raise ValueError(
                f'{path}: mask has shape {mask.shape}; expected a '
                'single-channel (palette or greyscale) PNG of class indices')
        img = results.get('img')
        if img is not None and img.shape[:2] != mask.shape:
            raise ValueError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its "
                f"image {results.get('img_path')} is "
                f'{img.shape[1]}x{img.shape[0]}; expected equal sizes')
        check_mask_values(mask, self.allowed_values, source=path)
        if results.get('gt_image_label') is None:
            results['gt_image_label'] = label_from_mask(
                mask, self.num_classes)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'allowed_values={self.allowed_values})')


def as_label_array(label) -> np.ndarray:
    return np.asarray(label, dtype=np.float32).reshape(-1)
