"""arsmooth: distribution smoothing for autoregressive models.

Meng, Song, Song, Zhao, Ermon, "Improved Autoregressive Modeling with Distribution Smoothing",
ICLR 2021 (https://arxiv.org/abs/2103.15089).
"""

__version__ = "0.1.0"
