from typing import List, NamedTuple, Optional, Tuple

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import add_prefix
from torch import Tensor

from ..decode_heads.lpd_head import LPDHead
from ..gating import check_gate_source, check_threshold
from ..postprocess import LPDPostProcessor
from ..utils.config_checks import check_choice, reject_unknown_keys
from ..utils.geometry import denormalize, restore_geometry

TEST_CFG_KEYS = ('mode', 'crop_size', 'stride', 'gate', 'gate_threshold',
                 'gate_rule', 'tissue_prior', 'crf', 'max_pixels')
DEFAULT_MAX_PIXELS = dict(whole=2048 * 2048, slide=8192 * 8192)


class RestoredMaps(NamedTuple):
    """One image's raw maps at its original size (padding, flip and
    rotation undone): ``cams (C, H0, W0)`` fused CAMs in ``[0, 1]``,
    ``class_probs (C, H0, W0)`` class probabilities and ``peaks
    (C, H0, W0)`` relative CAM peaks per pixel (constant per tile) and,
    when asked for, ``image (3, H0, W0)`` pixel values 0..255."""
    cams: Tensor
    class_probs: Tensor
    peaks: Tensor
    image: Optional[Tensor] = None


def _size_pair(name: str, value) -> Tuple[int, int]:
    """``(h, w)`` of positive ints from an int or a pair (a slide setting).
    """
    pair = (value, value) if isinstance(value, int) else value
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0
        for v in pair)
    if not ok:
        raise ValueError(f'{name} must be a positive int or an (h, w) pair '
                         f'of positive ints, got {value!r}')
    return tuple(pair)


@MODELS.register_module()
class LPDEncoderDecoder(EncoderDecoder):
    """Encoder-decoder for LPD with the paper's full inference pipeline.

    Training is the stock ``EncoderDecoder``'s (``decode_head.loss()``),
    plus, when ``mask_refiner`` is configured (e.g.
    ``dict(type='MaskRefiner', encoder='ema')``), the refiner's contrastive
    losses after the head's warm-up.

    Prediction follows mmseg's ``EncoderDecoder``: ``predict`` =
    ``inference`` then ``postprocess_result``::

        predict(inputs, data_samples, gate=None)
          inference(inputs, metas)            -> raw (B, 2C, H, W)
            _raw_maps / _slide_raw_maps          fused CAMs + class probs
          postprocess_result(raw, samples, inputs, gate)
            restore_result(raw, samples, inputs) -> [RestoredMaps] per image
              restore_geometry, denormalized_inputs (image, for the CRF)
            finalize_sample(sample, maps, gate)
              post_processor(cams, probs, gate, image, gt, label)
                -> LPDPostProcessor: gate, background, CRF, mask

        predict_raw(inputs, data_samples)     (LPDTTAModel's per-pass call)
          inference -> restore_result -> lpd_cams / lpd_class_probs /
          lpd_image on the samples, no gating

    :attr:`post_processor` is built once from ``test_cfg`` (the CRF
    settings are parsed there, once); nothing changes ``test_cfg`` later.
    Other settings for one call are passed explicitly (``gate=`` here,
    ``LPDPostProcessor.replace`` for another CRF).

    ``test_cfg`` keys: ``mode`` (``'whole'`` or ``'slide'``; slide tiles
    gate with their own class probabilities), ``crop_size`` and ``stride``
    (slide; an int or ``(h, w)``, ``stride <= crop_size`` per axis so that
    the tiles cover every pixel), ``gate`` (a gate source of
    :mod:`lpd_mmseg.models.gating`: ``'predicted'`` default, ``'oracle'``
    only for comparing with published tables, ``'labels'``, ``'none'``),
    ``gate_threshold`` (0.5, in ``[0, 1]``), ``gate_rule`` (how the
    model's own evidence weighs the classes it lets through, see
    :func:`~lpd_mmseg.models.gating.weigh_gate`), ``tissue_prior`` (None,
    or a dict of :class:`~lpd_mmseg.models.tissue_prior.TissuePrior`
    fields: background on bare glass), ``crf`` (None, or a dict with
    ``backend`` ``'torch'``/``'pydensecrf'`` plus ``DenseCRFParams`` fields
    and torch-backend options, ``max_memory_gb`` included), ``max_pixels``
    (largest image accepted, default 2048x2048 for whole and 8192x8192 for
    slide).

    Output per sample: ``seg_logits`` ``(C+1, H, W)`` (softmax gives class
    probabilities; log-probabilities after CRF) and ``pred_sem_seg`` with
    values ``0..C``, ``C`` = background.
    """

    def __init__(self, *args, mask_refiner: Optional[dict] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.decode_head, LPDHead):
            raise TypeError('LPDEncoderDecoder needs decode_head of type '
                            f'LPDHead, got {type(self.decode_head).__name__}')
        self.test_cfg = self._checked_test_cfg(self.test_cfg)
        self.post_processor = LPDPostProcessor.from_test_cfg(
            self.test_cfg, self.decode_head.background_alpha)
        self.mask_refiner = None
        if mask_refiner is not None:
            self.mask_refiner = MODELS.build(mask_refiner)
            self.mask_refiner.build(self.backbone,
                                    self.decode_head.in_channels[-1])

    # ------------------------------------------------------------- training
    def loss(self, inputs: Tensor, data_samples: List[SegDataSample]
             ) -> dict:
        """Head losses (classification, diversity after warm-up) and, when
        configured, the mask refiner's losses after warm-up.

        During warm-up the refiner's learnable parameters (its adapter) are
        folded, times zero, into the first decode loss: the logged values
        do not change, no refiner loss is logged, and DDP without
        ``find_unused_parameters`` still sees a gradient for them."""
        x = self.extract_feat(inputs)
        head = self.decode_head
        losses = self._decode_head_forward_train(x, data_samples)
        if self.mask_refiner is not None and head.extra_losses_active():
            losses.update(add_prefix(
                self.mask_refiner.loss(
                    inputs, head.prototype_evidence(x),
                    head.stack_image_labels(data_samples), self.backbone),
                'refine'))
        elif self.mask_refiner is not None:
            anchor = self.mask_refiner.zero_term()
            if anchor is not None:
                key = next(k for k in losses if 'loss' in k)
                losses[key] = losses[key] + anchor
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        return losses

    @staticmethod
    def _checked_test_cfg(test_cfg):
        from mmengine.config import ConfigDict
        test_cfg = ConfigDict(test_cfg or {})
        reject_unknown_keys(
            'LPDEncoderDecoder.test_cfg',
            {k: v for k, v in test_cfg.items() if k not in TEST_CFG_KEYS},
            TEST_CFG_KEYS)
        test_cfg.setdefault('mode', 'whole')
        check_choice('test_cfg.mode', test_cfg.mode, ('whole', 'slide'))
        test_cfg.setdefault('gate', 'predicted')
        check_gate_source('test_cfg.gate', test_cfg.gate)
        test_cfg.setdefault('gate_threshold', 0.5)
        check_threshold('test_cfg.gate_threshold', test_cfg.gate_threshold)
        test_cfg.setdefault('crf', None)
        if test_cfg.mode == 'slide':
            for key in ('crop_size', 'stride'):
                if key not in test_cfg:
                    raise KeyError(f"test_cfg.mode='slide' needs "
                                   f'test_cfg.{key}')
                test_cfg[key] = _size_pair(f'test_cfg.{key}', test_cfg[key])
            crop, stride = test_cfg.crop_size, test_cfg.stride
            if any(s > c for s, c in zip(stride, crop)):
                raise ValueError(
                    f'test_cfg.stride={stride} is larger than test_cfg.'
                    f'crop_size={crop} along an axis: the tiles would leave '
                    'pixels between them without a prediction. Use a stride '
                    '<= crop_size per axis (h, w).')
        return test_cfg

    @property
    def crf_enabled(self) -> bool:
        return self.post_processor.crf is not None

    @property
    def num_classes_tissue(self) -> int:
        return self.decode_head.num_classes

    # ------------------------------------------------------------- raw maps
    def _raw_maps(self, inputs: Tensor) -> Tensor:
        """``(B, 3C, H, W)``: fused CAMs, then class probabilities and
        relative peaks as constant maps (so that tiling averages them per
        pixel)."""
        x = self.extract_feat(inputs)
        cams, probs, peaks = self.decode_head.predict_evidence(
            x, inputs.shape[2:])
        return torch.cat([cams] + [v[:, :, None, None].expand_as(cams)
                                   for v in (probs, peaks)], 1)

    def _check_size(self, inputs: Tensor) -> None:
        mode = self.test_cfg.mode
        limit = self.test_cfg.get('max_pixels') or DEFAULT_MAX_PIXELS[mode]
        height, width = inputs.shape[2:]
        if height * width > limit:
            hint = (" Use test_cfg=dict(mode='slide', crop_size=(224, 224), "
                    'stride=(192, 192)) for large images,'
                    if mode == 'whole' else '')
            raise ValueError(
                f'image of {width}x{height} pixels ({height * width / 1e6:.1f}'
                f' Mpx) exceeds test_cfg.max_pixels={limit} for '
                f"mode='{mode}'.{hint} or raise test_cfg.max_pixels if the "
                'memory allows.')

    def _slide_raw_maps(self, inputs: Tensor) -> Tensor:
        h_stride, w_stride = self.test_cfg.stride
        h_crop, w_crop = self.test_cfg.crop_size
        batch, _, height, width = inputs.shape
        channels = 3 * self.num_classes_tissue
        h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
        total = inputs.new_zeros((batch, channels, height, width))
        count = inputs.new_zeros((batch, 1, height, width))
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, height)
                x2 = min(w_idx * w_stride + w_crop, width)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                total[:, :, y1:y2, x1:x2] += self._raw_maps(
                    inputs[:, :, y1:y2, x1:x2])
                count[:, :, y1:y2, x1:x2] += 1
        # in place: at 4096 x 4096 a second (B, 3C, H, W) map is 0.8 GB
        return total.div_(count)

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]
                  ) -> Tensor:
        """Raw maps ``(B, 3C, H, W)`` for the (padded) input batch."""
        self._check_size(inputs)
        if self.test_cfg.mode == 'slide':
            return self._slide_raw_maps(inputs)
        return self._raw_maps(inputs)

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Final scores ``(B, C+1, H, W)``, gated as ``test_cfg.gate``
        says, without CRF (``'oracle'`` and ``'labels'`` need data
        samples, which only :meth:`predict` gets)."""
        if self.post_processor.gate in ('oracle', 'labels'):
            raise ValueError(
                f"test_cfg.gate='{self.post_processor.gate}' reads the "
                'ground-truth mask or image label, but encode_decode() '
                'receives only images and metainfo; call predict() with '
                'data samples carrying gt_sem_seg / gt_image_label, or use '
                "gate='predicted' or 'none'")
        raw = self.inference(inputs, batch_img_metas)
        cams, probs, peaks = raw.split(self.num_classes_tissue, dim=1)
        post = self.post_processor.replace(crf=None, tissue_prior=None)
        return post(cams, probs, peaks=peaks)[0]

    # ------------------------------------------------------------- geometry
    def restore_geometry(self, maps: Tensor, meta: dict, mode: str) -> Tensor:
        """``(1, K, H, W)`` network-size maps -> ``(K, H0, W0)`` at the
        original size (:func:`~lpd_mmseg.models.utils.geometry.\
restore_geometry`)."""
        return restore_geometry(maps, meta, mode)

    def denormalized_inputs(self, inputs: Tensor) -> Tensor:
        """Pixel values 0..255 of preprocessed inputs."""
        return denormalize(inputs, self.data_preprocessor)

    # -------------------------------------------------------------- predict
    @staticmethod
    def _default_samples(inputs: Tensor) -> List[SegDataSample]:
        shape = tuple(inputs.shape[2:])
        return [
            SegDataSample(metainfo=dict(
                ori_shape=shape, img_shape=shape, pad_shape=shape,
                padding_size=[0, 0, 0, 0]))
            for _ in range(inputs.shape[0])
        ]

    def restore_result(self, raw: Tensor, data_samples: List[SegDataSample],
                       inputs: Optional[Tensor] = None
                       ) -> List[RestoredMaps]:
        """Per image, the raw maps ``(B, 3C, H, W)`` of :meth:`inference`
        at the original image size; with ``inputs`` (the preprocessed
        batch) also the image in pixel values, for a CRF."""
        num_classes = self.num_classes_tissue
        out = []
        for i, sample in enumerate(data_samples):
            meta = sample.metainfo
            maps = self.restore_geometry(raw[i:i + 1], meta, 'bilinear')
            image = None
            if inputs is not None:
                image = self.restore_geometry(
                    self.denormalized_inputs(inputs[i:i + 1]), meta,
                    'bilinear')
            out.append(RestoredMaps(*maps.split(num_classes), image))
        return out

    def finalize_sample(self, sample: SegDataSample, maps: RestoredMaps,
                        gate: Optional[str] = None) -> SegDataSample:
        """Run :attr:`post_processor` on one image's restored maps and set
        ``seg_logits`` ``(C+1, H0, W0)`` and ``pred_sem_seg``
        ``(1, H0, W0)`` on ``sample``."""
        gt = sample.gt_sem_seg.data if 'gt_sem_seg' in sample else None
        label = sample.gt_image_label if 'gt_image_label' in sample \
            else None
        image = None if maps.image is None else maps.image[None]
        scores, mask = self.post_processor(
            maps.cams[None], maps.class_probs[None], gate, image, [gt],
            [label], [sample.metainfo.get('img_path')], maps.peaks[None])
        sample.set_data(dict(seg_logits=PixelData(data=scores[0]),
                             pred_sem_seg=PixelData(data=mask)))
        return sample

    def postprocess_result(self, raw: Tensor,
                           data_samples: List[SegDataSample],
                           inputs: Optional[Tensor] = None,
                           gate: Optional[str] = None
                           ) -> List[SegDataSample]:
        """Restore each image's maps and post-process them (gate source
        ``gate``, or ``test_cfg.gate`` when None)."""
        wanted = inputs if self.post_processor.needs_image else None
        for sample, maps in zip(data_samples,
                                self.restore_result(raw, data_samples,
                                                    wanted)):
            self.finalize_sample(sample, maps, gate)
        return data_samples

    def predict(self, inputs: Tensor,
                data_samples: Optional[List[SegDataSample]] = None,
                gate: Optional[str] = None) -> List[SegDataSample]:
        """Segment a preprocessed batch (see the class docstring).

        Args:
            inputs (Tensor): ``(B, 3, H, W)``.
            data_samples (list, optional): with metainfo; ``gt_sem_seg``
                for ``gate='oracle'``, ``gt_image_label`` for
                ``'labels'``.
            gate (str, optional): gate source for this call instead of
                ``test_cfg.gate``.
        """
        if data_samples is None:
            data_samples = self._default_samples(inputs)
        raw = self.inference(inputs, [s.metainfo for s in data_samples])
        return self.postprocess_result(raw, data_samples, inputs, gate)

    def predict_raw(self, inputs: Tensor,
                    data_samples: Optional[List[SegDataSample]] = None,
                    with_image: Optional[bool] = None
                    ) -> List[SegDataSample]:
        """Restored raw maps, no gating: sets ``lpd_cams``,
        ``lpd_class_probs``, ``lpd_peaks`` and (when the post-processing
        needs it, or ``with_image``) ``lpd_image`` on the samples, for
        callers that merge several passes before :meth:`finalize_sample`
        (test-time augmentation)."""
        if data_samples is None:
            data_samples = self._default_samples(inputs)
        if with_image is None:
            with_image = self.post_processor.needs_image
        raw = self.inference(inputs, [s.metainfo for s in data_samples])
        restored = self.restore_result(raw, data_samples,
                                       inputs if with_image else None)
        for sample, maps in zip(data_samples, restored):
            sample.set_data(dict(
                lpd_cams=PixelData(data=maps.cams),
                lpd_class_probs=PixelData(data=maps.class_probs),
                lpd_peaks=PixelData(data=maps.peaks)))
            if maps.image is not None:
                sample.set_data(dict(lpd_image=PixelData(data=maps.image)))
        return data_samples

    def forward(self, inputs: Tensor, data_samples=None,
                mode: str = 'tensor'):
        """mmseg's modes plus ``'raw'`` (:meth:`predict_raw`)."""
        if mode == 'raw':
            return self.predict_raw(inputs, data_samples)
        return super().forward(inputs, data_samples, mode)
