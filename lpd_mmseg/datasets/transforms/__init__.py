from .formatting import PackWeakSegInputs
from .histology import (
                        FixedBrightness,
                        HEDJitter,
                        RandomRotate90,
                        hed_jitter,
                        hed_to_rgb,
                        rgb_to_hed,
)
from .loading import LoadHistoAnnotations

__all__ = [
    'PackWeakSegInputs', 'LoadHistoAnnotations', 'HEDJitter',
    'RandomRotate90', 'FixedBrightness', 'hed_jitter', 'rgb_to_hed',
    'hed_to_rgb'
]
