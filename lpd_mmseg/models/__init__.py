from .decode_heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .refiners import *  # noqa: F401,F403
from .segmentors import *  # noqa: F401,F403
