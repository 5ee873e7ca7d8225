"""vramplan: will this fine-tuning run fit, and with which settings?"""

__version__ = "0.1.0"

from .api import estimate, recommend  # noqa: E402  (the Python API; it imports the planner only when called)

__all__ = ["estimate", "recommend", "__version__"]
