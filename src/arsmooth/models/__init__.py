"""The density models: image models (an AR network with its objective's likelihood), MADE, mixtures, RealNVP;
built from settings or checkpoints (`build`), imported from the public port (`port`), and the weights that ship
(`pretrained`)."""

from torch import nn


def count_params(m: nn.Module) -> int:
    """The number of parameters of ``m``."""
    return sum(p.numel() for p in m.parameters())
