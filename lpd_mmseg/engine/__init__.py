from . import atomic_io  # noqa: F401  (registers the atomic file backend)
from .hooks import *  # noqa: F401,F403
from .loops import SizeGroupedTestLoop, SizeGroupedValLoop  # noqa: F401
