from numbers import Real
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import add_prefix
from torch import Tensor

from ..crf import DenseCRF, build_crf
from ..decode_heads.lpd_head import (
    GATE_MODES,
    LPDHead,
    lpd_scores,
    predicted_class_gate,
)
from ..utils.config_checks import check_choice, reject_unknown_keys

TEST_CFG_KEYS = ('mode', 'crop_size', 'stride', 'gate', 'gate_threshold',
                 'crf', 'max_pixels')
DEFAULT_MAX_PIXELS = dict(whole=2048 * 2048, slide=8192 * 8192)


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


def present_classes(mask: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` 0/1 float: which of the classes ``0..C-1`` occur in
    ``mask``."""
    values = torch.unique(mask)
    values = values[(values >= 0) & (values < num_classes)].long()
    gate = torch.zeros(num_classes, device=mask.device)
    gate[values] = 1
    return gate


@MODELS.register_module()
class LPDEncoderDecoder(EncoderDecoder):
    """Encoder-decoder for LPD with the paper's full inference pipeline.

    Training is the stock ``EncoderDecoder``'s.  Prediction adds what a
    decode head alone cannot do, because it needs the image or the
    ground truth:

    - class gating by the model's own class probabilities (default), by the
      ground-truth mask (``gate='oracle'``, only for comparing with published
      tables) or none;
    - the background channel and an optional dense CRF on the original
      image;
    - tiled (``mode='slide'``) inference where each tile gates with its own
      class probabilities, for images larger than a patch;
    - raw per-image CAMs and class probabilities kept for
      :class:`LPDTTAModel`, which averages them over the augmented passes
      before gating and CRF, as in the paper.

    ``test_cfg`` keys: ``mode`` (``'whole'`` or ``'slide'``), ``crop_size``
    and ``stride`` (slide; an int or ``(h, w)``, ``stride <= crop_size``
    per axis so that the tiles cover every pixel), ``gate``
    (``'predicted'``, ``'oracle'``, ``'none'``), ``gate_threshold`` (0.5,
    in ``[0, 1]``), ``crf`` (None, or a dict with ``backend``
    ``'torch'``/``'pydensecrf'`` plus ``DenseCRFParams`` fields and
    torch-backend options, ``max_memory_gb`` included), ``max_pixels``
    (largest image accepted, default 2048x2048 for whole and 8192x8192 for
    slide).

    Training adds, when ``mask_refiner`` is configured (e.g.
    ``dict(type='MaskRefiner', encoder='ema')``), the refiner's contrastive
    losses after the head's warm-up.

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
        # Set by LPDTTAModel while it runs the augmented passes.
        self.defer_finalize = False
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
        similarities = head.forward(x)
        labels = head.stack_image_labels(data_samples)
        losses = add_prefix(head.loss_by_feat(similarities, labels),
                            'decode')
        if self.mask_refiner is not None and head.extra_losses_active():
            logit_map = head.stage_logit_maps(similarities)[-1]
            losses.update(add_prefix(
                self.mask_refiner.loss(inputs, logit_map, labels, head,
                                       self.backbone), 'refine'))
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
        check_choice('test_cfg.gate', test_cfg.gate, GATE_MODES)
        test_cfg.setdefault('gate_threshold', 0.5)
        threshold = test_cfg.gate_threshold
        if (isinstance(threshold, bool) or not isinstance(threshold, Real)
                or not 0 <= threshold <= 1):
            raise ValueError('test_cfg.gate_threshold must be a probability '
                             f'in [0, 1], got {threshold!r}')
        test_cfg.setdefault('crf', None)
        build_crf(test_cfg.crf)  # validates early
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
    def crf(self) -> Optional[DenseCRF]:
        """``test_cfg.crf`` parsed once per assigned dict (None: no CRF)."""
        cfg = self.test_cfg.get('crf')
        if getattr(self, '_crf_cfg', object()) is not cfg:
            self._crf, self._crf_cfg = build_crf(cfg), cfg
        return self._crf

    @property
    def crf_enabled(self) -> bool:
        return self.crf is not None

    @property
    def num_classes_tissue(self) -> int:
        return self.decode_head.num_classes

    # ------------------------------------------------------------- raw maps
    def _raw_maps(self, inputs: Tensor) -> Tensor:
        """``(B, 2C, H, W)``: fused CAMs, then class probabilities as
        constant maps (so that tiling averages them per pixel)."""
        x = self.extract_feat(inputs)
        cams, probs = self.decode_head.predict_cams(x, inputs.shape[2:])
        return torch.cat([cams, probs[:, :, None, None].expand_as(cams)], 1)

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
        channels = 2 * self.num_classes_tissue
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
        # in place: at 4096 x 4096 a second (B, 2C, H, W) map is 0.5 GB
        return total.div_(count)

    def inference(self, inputs: Tensor, batch_img_metas: List[dict]
                  ) -> Tensor:
        """Raw maps ``(B, 2C, H, W)`` for the (padded) input batch."""
        self._check_size(inputs)
        if self.test_cfg.mode == 'slide':
            return self._slide_raw_maps(inputs)
        return self._raw_maps(inputs)

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Final scores ``(B, C+1, H, W)``, gated as ``test_cfg.gate``
        says (``'oracle'`` needs the masks, which only :meth:`predict`
        gets)."""
        if self.test_cfg.gate == 'oracle':
            raise ValueError(
                "test_cfg.gate='oracle' reads the ground-truth mask, but "
                'encode_decode() receives only images and metainfo; call '
                'predict() with data samples carrying gt_sem_seg, or use '
                "gate='predicted' or 'none'")
        raw = self.inference(inputs, batch_img_metas)
        return self._scores(*raw.split(self.num_classes_tissue, dim=1))

    # ---------------------------------------------------------- finalising
    def _scores(self, cams: Tensor, probs: Tensor,
                gate: Optional[Tensor] = None) -> Tensor:
        if gate is None and self.test_cfg.gate == 'predicted':
            gate = predicted_class_gate(probs, self.test_cfg.gate_threshold)
        return lpd_scores(cams, gate, self.decode_head.background_alpha)

    def finalize(self,
                 cams: Tensor,
                 probs: Tensor,
                 image: Optional[Tensor] = None,
                 gt_mask: Optional[Tensor] = None,
                 source: Optional[str] = None,
                 labels: Optional[Tensor] = None) -> Tensor:
        """Gating, background channel and optional CRF for one image.

        Args:
            cams (Tensor): ``(C, H, W)`` fused CAMs in ``[0, 1]``.
            probs (Tensor): ``(C, H, W)`` class-probability maps.
            image (Tensor, optional): ``(3, H, W)`` pixel values 0..255,
                needed when ``test_cfg.crf`` is set.
            gt_mask (Tensor, optional): ``(1, H, W)`` or ``(H, W)``, needed
                for ``gate='oracle'``.
            source (str, optional): image path for error messages.
            labels (Tensor, optional): ``(C,)`` known image-level labels
                (e.g. of a training patch); when given they gate the classes
                instead of ``test_cfg.gate``.

        Returns:
            Tensor: ``seg_logits`` ``(C + 1, H, W)``.
        """
        gate = None
        if labels is not None:
            gate = labels.reshape(1, -1).to(cams)
        elif self.test_cfg.gate == 'oracle':
            if gt_mask is None:
                raise ValueError(
                    f"test_cfg.gate='oracle' takes class presence from the "
                    f'ground-truth mask, but {source or "this sample"} has '
                    "none; use gate='predicted' on data without masks")
            gate = present_classes(gt_mask, self.num_classes_tissue)[None]
        if gate is None and self.test_cfg.gate == 'predicted':
            gate = predicted_class_gate(probs[None],
                                        self.test_cfg.gate_threshold)
        scores = lpd_scores(cams[None], gate,
                            self.decode_head.background_alpha)[0]
        if not self.crf_enabled:
            return scores
        if image is None:
            raise ValueError('test_cfg.crf needs the image; none was given')
        return self.crf(scores, image, None if gate is None else gate[0])

    # ------------------------------------------------------------- geometry
    def restore_geometry(self, maps: Tensor, meta: dict, mode: str) -> Tensor:
        """Remove padding, undo a rotation and a flip, resize
        ``(1, K, H, W)`` to the original image size; returns
        ``(K, H0, W0)``.

        ``RandomRotate90`` records in ``rot90_after_flip`` whether a
        ``RandomFlip`` ran before it; the two are undone in the reverse
        order (without the key, as in metainfo from elsewhere, the flip is
        taken to have come first, the order of the shipped pipelines).  An
        odd ``rot90_k`` swaps the height and width of a non-square image
        back.
        """
        height, width = maps.shape[2:]
        left, right, top, bottom = meta.get(
            'img_padding_size', meta.get('padding_size', [0] * 4))
        maps = maps[:, :, top:height - bottom, left:width - right]
        turns = meta.get('rot90_k', 0)
        if isinstance(turns, bool) or not isinstance(turns,
                                                     (int, np.integer)):
            raise ValueError(f'rot90_k must be an int (quarter turns), got '
                             f'{turns!r}')
        flip_dims = ()
        if meta.get('flip', False):
            direction = meta.get('flip_direction')
            if direction not in ('horizontal', 'vertical'):
                raise ValueError(f'unknown flip_direction {direction!r}')
            flip_dims = (3, ) if direction == 'horizontal' else (2, )

        def unrotate(m):
            return torch.rot90(m, -int(turns), dims=(2, 3)) if turns % 4 \
                else m

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

    def denormalized_inputs(self, inputs: Tensor) -> Tensor:
        """Undo the data preprocessor's normalisation: pixel values 0..255
        (channel order as fed to the network)."""
        pre = self.data_preprocessor
        if getattr(pre, '_enable_normalize', False):
            inputs = inputs * pre.std + pre.mean
        return inputs.clamp(0, 255)

    # -------------------------------------------------------------- predict
    def predict(self, inputs: Tensor,
                data_samples: Optional[List[SegDataSample]] = None
                ) -> List[SegDataSample]:
        if data_samples is None:
            shape = tuple(inputs.shape[2:])
            data_samples = [
                SegDataSample(metainfo=dict(
                    ori_shape=shape, img_shape=shape, pad_shape=shape,
                    padding_size=[0, 0, 0, 0]))
                for _ in range(inputs.shape[0])
            ]
        metas = [s.metainfo for s in data_samples]
        raw = self.inference(inputs, metas)
        num_classes = self.num_classes_tissue
        want_image = self.crf_enabled
        for i, sample in enumerate(data_samples):
            maps = self.restore_geometry(raw[i:i + 1], metas[i], 'bilinear')
            cams, probs = maps[:num_classes], maps[num_classes:]
            image = None
            if want_image:
                image = self.restore_geometry(
                    self.denormalized_inputs(inputs[i:i + 1]), metas[i],
                    'bilinear')
            gt = sample.gt_sem_seg.data if 'gt_sem_seg' in sample else None
            if self.defer_finalize:
                sample.set_data(dict(
                    lpd_cams=PixelData(data=cams),
                    lpd_class_probs=PixelData(data=probs)))
                if image is not None:
                    sample.set_data(dict(lpd_image=PixelData(data=image)))
                seg_logits = self._scores(cams[None], probs[None])[0]
            else:
                seg_logits = self.finalize(cams, probs, image, gt,
                                           metas[i].get('img_path'))
            sample.set_data(dict(
                seg_logits=PixelData(data=seg_logits),
                pred_sem_seg=PixelData(
                    data=seg_logits.argmax(dim=0, keepdim=True))))
        return data_samples

    def class_probabilities(self, inputs: Tensor) -> Tuple[Tensor, Tensor]:
        """Fused CAMs ``(B, C, H, W)`` and class probabilities ``(B, C)``
        for a batch of preprocessed images (whole-image mode)."""
        x = self.extract_feat(inputs)
        return self.decode_head.predict_cams(x, inputs.shape[2:])
