import mmcv
import mmengine.fileio as fileio
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
    - refuses masks that cannot be decoded, that are not single-channel,
      whose size differs from the image, or that hold values other than
      ``0..num_classes`` (tissue classes plus the background index
      ``num_classes``).  Values are checked as stored in the file, before
      the cast to ``uint8`` (so a 16-bit mask holding 260 is refused rather
      than read as 4) and before ``reduce_zero_label`` / ``label_map``;
    - sets ``gt_image_label`` (multi-hot over the tissue classes) from the
      mask when the sample has none.

    Args:
        num_classes (int): number of tissue classes.  Default 4.
        extra_values (tuple[int]): other values a mask may hold (e.g. 255
            for an ignore label), each in ``0..255``.  Default ``()``.
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
        too_large = [v for v in self.allowed_values if not 0 <= v <= 255]
        if too_large:
            raise ValueError(
                f'LoadHistoAnnotations: mask values {too_large} (from '
                f'num_classes={num_classes}, extra_values={extra_values}) do '
                'not fit the uint8 masks MMSeg uses; expected values in '
                '0..255')

    def transform(self, results: dict) -> dict:
        path = results.get('seg_map_path')
        if path is None:
            return results
        results = super().transform(results)
        mask = results['gt_seg_map']
        img = results.get('img')
        if img is not None and img.shape[:2] != mask.shape:
            raise ValueError(
                f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its "
                f"image {results.get('img_path')} is "
                f'{img.shape[1]}x{img.shape[0]}; expected equal sizes')
        if results.get('gt_image_label') is None:
            results['gt_image_label'] = label_from_mask(
                mask, self.num_classes)
        return results

    def _load_seg_map(self, results: dict) -> None:
        """Decode the mask once, check it raw, then do what mmseg 1.x does.

        mmseg casts the decoded mask to ``uint8`` straight away, which wraps
        16-bit values (260 -> 4) silently; the checks here run first.
        """
        path = results['seg_map_path']
        img_bytes = fileio.get(path, backend_args=self.backend_args)
        try:
            raw = mmcv.imfrombytes(
                img_bytes, flag='unchanged', backend=self.imdecode_backend)
        except Exception as e:
            raise ValueError(
                f'{path}: cannot decode the mask ({type(e).__name__}: {e}); '
                'expected a readable single-channel PNG of class '
                'indices') from e
        if raw is None:  # the cv2 backend returns None instead of raising
            raise ValueError(
                f'{path}: cannot decode the mask; expected a readable '
                'single-channel PNG of class indices')
        if raw.ndim == 3 and raw.shape[2] == 1:
            raw = raw[..., 0]
        if raw.ndim != 2:
            raise ValueError(
                f'{path}: mask has shape {raw.shape}; expected a '
                'single-channel (palette or greyscale) PNG of class indices')
        source = path if raw.dtype == np.uint8 else \
            f'{path} (decoded as {raw.dtype})'
        check_mask_values(raw, self.allowed_values, source=source)
        mask = raw.astype(np.uint8)

        # mmseg's two remappings, applied after the checks above.
        reduce = results.get('reduce_zero_label', False)
        if self.reduce_zero_label is None:
            self.reduce_zero_label = reduce
        if self.reduce_zero_label != reduce:
            raise ValueError(
                f'{path}: the dataset has reduce_zero_label={reduce} but '
                f'LoadHistoAnnotations has {self.reduce_zero_label}; expected '
                'the same setting in both')
        if reduce:
            # 0 (and 255) become the ignore index, the rest shifts down.
            mask = np.where((mask == 0) | (mask == 255), 255,
                            mask - 1).astype(np.uint8)
        label_map = results.get('label_map')
        if label_map:
            lookup = np.arange(256, dtype=np.uint8)
            for old, new in label_map.items():
                lookup[old] = new
            mask = lookup[mask]
        results['gt_seg_map'] = mask
        results['seg_fields'].append('gt_seg_map')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'allowed_values={self.allowed_values})')


def as_label_array(label) -> np.ndarray:
    return np.asarray(label, dtype=np.float32).reshape(-1)
