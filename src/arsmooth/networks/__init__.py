"""The autoregressive image networks, built from settings: PixelCNN++, a causal pixel transformer, and any
network of your own registered with :func:`register_network` (what one must offer:
:mod:`arsmooth.networks.interface`; a worked example: ``docs/own_network.md``)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ArsmoothError
from ..runtime.config import NETWORKS, ModelSettings, NetworkFamily
from .interface import ARImageNetwork

# build(channels, model_settings, image_size, conditioned) -> the network
Builder = Callable[[int, ModelSettings, tuple[int, int], bool], nn.Module]
SHIPPED = ("pixelcnnpp", "transformer")


def _pixelcnnpp(channels: int, m: ModelSettings, image_size: tuple[int, int], conditioned: bool) -> nn.Module:
    from .pixelcnnpp import PixelCNNpp

    return PixelCNNpp(channels, m, spatial_condition=conditioned)


def _transformer(channels: int, m: ModelSettings, image_size: tuple[int, int], conditioned: bool) -> nn.Module:
    from .transformer import PixelTransformer

    return PixelTransformer(channels, m, image_size=image_size, conditioned=conditioned)


_BUILDERS: dict[str, Builder] = {"pixelcnnpp": _pixelcnnpp, "transformer": _transformer}


def register_network(name: str, build: Builder, *, shape_keys: tuple[str, ...] = ("nr_resnet", "nr_filters",
                     "nr_logistic_mix"), describe: Callable[[ModelSettings], str] | None = None,
                     stacked: bool = True) -> None:
    """Make ``model.network=name`` build ``build(channels, model_settings, image_size, conditioned)``.

    The network must satisfy :class:`~arsmooth.networks.interface.ARImageNetwork` (checked when built); with
    ``conditioned`` it is a stage 2 that sees x~ through its own ``encoder``. ``shape_keys``: the
    :class:`~arsmooth.runtime.config.ModelSettings` it reads that fix its weight shapes (a warm start compares them);
    ``stacked``: whether it also takes the paper's stacked ``[x~ ; x]`` image (twice the height). Register
    before settings that name the network are read (a checkpoint's included). Registering a name again
    replaces it; the shipped names cannot be replaced.
    """
    if name in SHIPPED:
        raise ArsmoothError(f"{name} is a shipped network; register yours under another name")
    if not (isinstance(name, str) and name.replace("-", "").replace("_", "").isalnum()):
        raise ArsmoothError(f"a network name is letters, digits, - and _, got {name!r}")
    unknown = [k for k in shape_keys if k not in ModelSettings.__dataclass_fields__]
    if unknown:
        raise ArsmoothError(f"shape_keys names no model setting: {', '.join(unknown)}")
    NETWORKS[name] = NetworkFamily(tuple(shape_keys), describe or (lambda m: name), stacked)
    _BUILDERS[name] = build


def build_network(channels: int, m: ModelSettings, *, image_size: tuple[int, int], conditioned: bool) -> nn.Module:
    """The network ``m.network`` names, for ``channels``-channel images of ``image_size``; ``conditioned``
    gives it the non-causal x~ path of a spatial stage 2."""
    if m.network not in _BUILDERS:
        raise ArsmoothError(f"model.network={m.network} is not registered in this process; import the module that "
                            "registers it (arsmooth.networks.register_network)")
    net = _BUILDERS[m.network](channels, m, tuple(image_size), conditioned)
    if not isinstance(net, ARImageNetwork):
        missing = [k for k in ("in_channels", "out_channels", "nr_logistic_mix", "encoder", "check_size",
                               "probe_layers") if not hasattr(net, k)]
        raise ArsmoothError(f"the {m.network} network lacks what arsmooth needs of a network: {', '.join(missing)} "
                            "(arsmooth.networks.interface.ARImageNetwork)")
    if conditioned == (net.encoder is None):
        raise ArsmoothError(f"the {m.network} network was asked for conditioned={conditioned} but its encoder is "
                            f"{'missing' if conditioned else 'there'}")
    return net
