__version__ = '0.1.0'

# Ranges this plugin is tested against.  Lower bound inclusive, upper bound
# exclusive.  ``compat.check_versions`` enforces them on import.
SUPPORTED_VERSIONS = {
    'mmcv': ('2.0.0rc4', '2.2.0'),
    'mmengine': ('0.10.0', '0.11.0'),
    'mmsegmentation': ('1.2.0', '1.3.0'),
}
