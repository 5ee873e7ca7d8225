"""vramplan: will this fine-tuning run fit, and with which settings?"""

__version__ = "0.1.0"
