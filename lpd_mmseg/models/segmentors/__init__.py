from .lpd_encoder_decoder import LPDEncoderDecoder
from .lpd_tta import LPDTTAModel

__all__ = ['LPDEncoderDecoder', 'LPDTTAModel']
