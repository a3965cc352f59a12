from typing import List

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import SegTTAModel
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample


@MODELS.register_module()
class LPDTTAModel(SegTTAModel):
    """Test-time augmentation for :class:`LPDEncoderDecoder`.

    The paper averages the fused CAMs over the augmented passes (horizontal
    flip x brightness 0.9/1.0/1.1) and only then gates, adds the background
    channel and runs the CRF.  mmseg's ``SegTTAModel`` would instead average
    per-pass softmax outputs, so this model asks each pass for its raw CAMs
    and class probabilities (flip and ``RandomRotate90`` rotation already
    undone, see :meth:`LPDEncoderDecoder.restore_geometry`) and finalises
    once.
    The CRF sees the image of the pass whose brightness factor is closest
    to 1.
    """

    def test_step(self, data):
        self.module.defer_finalize = True
        try:
            return super().test_step(data)
        finally:
            self.module.defer_finalize = False

    def merge_preds(self, data_samples_list: List[List[SegDataSample]]
                    ) -> List[SegDataSample]:
        merged = []
        for passes in data_samples_list:
            cams = torch.stack([p.lpd_cams.data for p in passes]).mean(0)
            probs = torch.stack([p.lpd_class_probs.data
                                 for p in passes]).mean(0)
            image = None
            if 'lpd_image' in passes[0]:
                closest = min(passes, key=lambda p: abs(
                    p.metainfo.get('brightness_factor', 1.0) - 1.0))
                image = closest.lpd_image.data
            first = passes[0]
            gt = first.gt_sem_seg.data if 'gt_sem_seg' in first else None
            seg_logits = self.module.finalize(cams, probs, image, gt,
                                              first.metainfo.get('img_path'))
            result = SegDataSample(metainfo=first.metainfo)
            result.set_data(dict(
                seg_logits=PixelData(data=seg_logits),
                pred_sem_seg=PixelData(
                    data=seg_logits.argmax(dim=0, keepdim=True))))
            if gt is not None:
                result.gt_sem_seg = first.gt_sem_seg
            merged.append(result)
        return merged
