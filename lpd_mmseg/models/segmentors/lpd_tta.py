from typing import List

import torch
from mmseg.models.segmentors import SegTTAModel
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from .lpd_encoder_decoder import RestoredMaps


@MODELS.register_module()
class LPDTTAModel(SegTTAModel):
    """Test-time augmentation for :class:`LPDEncoderDecoder`.

    The paper averages the fused CAMs over the augmented passes (horizontal
    flip x brightness 0.9/1.0/1.1) and only then gates, adds the background
    channel and runs the CRF.  mmseg's ``SegTTAModel`` would instead average
    per-pass softmax outputs, so each pass here asks the segmentor for its
    raw maps (``mode='raw'``, :meth:`LPDEncoderDecoder.predict_raw`: CAMs
    and class probabilities with flip and ``RandomRotate90`` rotation
    already undone), and :meth:`merge_preds` post-processes their mean once
    with :meth:`LPDEncoderDecoder.finalize_sample`, the segmentor's one
    post-processing path.
    The CRF sees the image of the pass whose brightness factor is closest
    to 1.
    """

    def test_step(self, data):
        """Raw maps of every augmented pass, merged (see the class
        docstring)."""
        if not isinstance(data, dict):
            raise TypeError('LPDTTAModel expects the TTA data loader to give '
                            f'a dict of per-pass lists, got {type(data)}')
        num_augs = len(data[next(iter(data))])
        passes = []
        for idx in range(num_augs):
            one = self.module.data_preprocessor(
                {key: value[idx] for key, value in data.items()}, False)
            passes.append(self.module(**one, mode='raw'))
        return self.merge_preds(list(zip(*passes)))

    def merge_preds(self, data_samples_list: List[List[SegDataSample]]
                    ) -> List[SegDataSample]:
        merged = []
        for passes in data_samples_list:
            cams, probs, peaks = (
                torch.stack([p.get(key).data for p in passes]).mean(0)
                for key in ('lpd_cams', 'lpd_class_probs', 'lpd_peaks'))
            image = None
            if 'lpd_image' in passes[0]:
                closest = min(passes, key=lambda p: abs(
                    p.metainfo.get('brightness_factor', 1.0) - 1.0))
                image = closest.lpd_image.data
            first = passes[0]
            result = SegDataSample(metainfo=first.metainfo)
            for key in ('gt_sem_seg', 'gt_image_label'):
                if key in first:
                    setattr(result, key, getattr(first, key))
            merged.append(self.module.finalize_sample(
                result, RestoredMaps(cams, probs, peaks, image)))
        return merged
