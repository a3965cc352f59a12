import numpy as np
import torch
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

from .loading import as_label_array

DEFAULT_META_KEYS = ('img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                     'pad_shape', 'scale_factor', 'flip', 'flip_direction',
                     'reduce_zero_label', 'rot90_k', 'rot90_after_flip',
                     'brightness_factor')


@TRANSFORMS.register_module()
class PackWeakSegInputs(PackSegInputs):
    """``PackSegInputs`` plus the image-level label.

    The multi-hot label (``results['gt_image_label']``, from the file name or
    the mask) becomes the data field ``data_sample.gt_image_label``, a float
    tensor of shape ``(num_classes,)``; being a data field it moves to the
    device with the batch.  ``gt_sem_seg`` is packed only when a mask was
    loaded, so training samples need none.

    Arrays with negative strides (a flip or rotation of an image with a
    side of 1 px, which numpy still reports as contiguous) are copied
    first; torch cannot wrap them.
    """

    def __init__(self, meta_keys=DEFAULT_META_KEYS):
        super().__init__(meta_keys=meta_keys)

    def transform(self, results: dict) -> dict:
        for key in ('img', 'gt_seg_map', *results.get('seg_fields', ())):
            value = results.get(key)
            if isinstance(value, np.ndarray) and min(value.strides,
                                                     default=0) < 0:
                results[key] = value.copy()
        packed = super().transform(results)
        label = results.get('gt_image_label')
        if label is not None:
            packed['data_samples'].gt_image_label = torch.from_numpy(
                as_label_array(label))
        return packed
