from .lpd_head import LPDHead

__all__ = ['LPDHead']
