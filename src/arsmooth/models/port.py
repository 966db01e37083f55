"""Import a PixelCNN++ trained by the public PyTorch port (pclucas14/pixel-cnn-pp) as a baseline run of ours.

The port saves ``torch.save(model.state_dict())``: weight-normalised layers as ``weight_g`` / ``weight_v``
(``torch.nn.utils.weight_norm``, norm over every axis but the first: per output filter of a convolution or
linear layer, per *input* channel of a transposed convolution), 1x1 layers as ``nin`` linear layers
(``lin_a``), and, when trained under DataParallel, every key behind ``module.``. Its blocks map one to one
onto ours (its "up pass" is our down pass, H -> H/4): ``up_layers.i`` -> ``down_u/down_ul[i]``,
``down_layers.i`` -> ``up_u/up_ul[i]``, ``nin_skip`` -> ``nin_aux``, ``downsize_*`` / ``upsize_*`` ->
``downsample_*`` / ``upsample_*``, ``u_init`` / ``ul_init.0`` / ``ul_init.1`` -> ``u_init`` /
``ul_init_above`` / ``ul_init_left``. Each layer's effective weight ``g v / |v|`` is computed and written
into our weight-norm parametrisation (``v = w``, ``g = |w|`` over our axes), so the network computes the
same function. The output layer's rows are reordered: the port lays out each colour's means, log-scales
and coefficients together (``[K logits | c0: mu, s, coef | c1: ... | c2: ...]``), we keep one kind of
parameter for all colours together (``[K logits | mu c0..c2 | s c0..c2 | coef]``). Its ``Dropout2d(0.5)``
is recorded as ``model.dropout_mode: channel``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ArsmoothError
from ..runtime import checkpoint as ckpt_io
from ..runtime.config import DataSettings, ModelSettings, Settings
from . import count_params
from .image_model import ImageModel

_PREFIX = "module."


def read_port_state(path: str | Path) -> dict[str, Tensor]:
    """The port's state dict from ``path`` (``weights_only=True``), without a DataParallel ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise ArsmoothError(f"{path} does not exist; give the .pth file the PyTorch port saved")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a zip, a pickle of code: one answer
        raise ArsmoothError(f"{path} is not a loadable PyTorch state dict ({ckpt_io._one_line(e)[:120]})") from None
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                           for k, v in state.items()):
        raise ArsmoothError(f"{path} holds a {type(state).__name__}, not a state dict of tensors "
                            "(torch.save(model.state_dict()))")
    if all(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX):]: v for k, v in state.items()}
    return state


def _need(state: dict, key: str) -> Tensor:
    if key not in state:
        raise ArsmoothError(f"the port's state dict lacks {key!r}; is this a PixelCNN++ of the PyTorch port?")
    return state[key]


def infer_settings(state: dict[str, Tensor]) -> tuple[ModelSettings, int]:
    """``nr_resnet``, ``nr_filters``, ``nr_logistic_mix`` and the channel count, from the tensors' shapes."""
    v = _need(state, "u_init.conv.weight_v")
    if v.dim() != 4:
        raise ArsmoothError(f"u_init.conv.weight_v has shape {tuple(v.shape)}, not a convolution's")
    nf, channels = v.shape[0], v.shape[1] - 1
    if channels not in (1, 3):
        raise ArsmoothError(f"u_init.conv.weight_v takes {v.shape[1]} input maps: {channels} image channels, not 1 or 3")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"up_layers\.0\.u_stream\.(\d+)\.", k))}
    if not blocks:
        raise ArsmoothError("the port's state dict has no up_layers.0.u_stream blocks")
    out = _need(state, "nin_out.lin_a.weight_v").shape[0]
    per_mix = 3 if channels == 1 else 10
    if out % per_mix:
        raise ArsmoothError(f"nin_out.lin_a has {out} outputs, not a multiple of {per_mix} ({channels} channels)")
    return ModelSettings(nr_resnet=len(blocks), nr_filters=nf, nr_logistic_mix=out // per_mix, dropout=0.5,
                         dropout_mode="channel"), channels


def _port_name(ours: str) -> str:
    """The port's key prefix of one of our weight-normed layers (``net.`` and the parametrisation removed)."""
    n = ours.removeprefix("net.")
    n = re.sub(r"^down_(u|ul)\.(\d+)\.", lambda m: f"up_layers.{m.group(2)}.{m.group(1)}_stream.", n)
    n = re.sub(r"^up_(u|ul)\.(\d+)\.", lambda m: f"down_layers.{m.group(2)}.{m.group(1)}_stream.", n)
    n = re.sub(r"^downsample_(u|ul)\.", r"downsize_\1_stream.", n)
    n = re.sub(r"^upsample_(u|ul)\.", r"upsize_\1_stream.", n)
    n = n.replace("conv_in.", "conv_input.").replace("nin_aux", "nin_skip.lin_a")
    n = n.replace("ul_init_above.", "ul_init.0.").replace("ul_init_left.", "ul_init.1.")
    return "nin_out.lin_a" if n == "nin_out" else n


def _effective(state: dict, name: str, shape: torch.Size) -> tuple[Tensor, Tensor]:
    """The port layer's weight ``g v / |v|`` (norm over every axis but the first), reshaped to ``shape``, and bias."""
    g, v = _need(state, f"{name}.weight_g"), _need(state, f"{name}.weight_v")
    if v.numel() != shape.numel() or g.numel() != v.shape[0]:
        raise ArsmoothError(f"{name}.weight_v has shape {tuple(v.shape)} (weight_g {tuple(g.shape)}); this network "
                            f"needs {tuple(shape)}: the tensors do not fit one PixelCNN++")
    w = g.reshape(-1, *[1] * (v.dim() - 1)) * v / v.flatten(1).norm(dim=1).reshape(-1, *[1] * (v.dim() - 1))
    return w.reshape(shape), _need(state, f"{name}.bias")


def _output_order(channels: int, nr_mix: int) -> Tensor:
    """Row ``r`` of our output layer is row ``order[r]`` of the port's."""
    if channels == 1:
        return torch.arange(3 * nr_mix)
    order = list(range(nr_mix))
    for kind in range(3):  # mu, log-scale, coefficient
        for c in range(3):
            start = nr_mix + (3 * c + kind) * nr_mix
            order += range(start, start + nr_mix)
    return torch.tensor(order)


def convert_port_state(state: dict[str, Tensor], image_size: int) -> tuple[ImageModel, Settings]:
    """A baseline :class:`ImageModel` computing what the port's network computes, and its settings."""
    m, channels = infer_settings(state)
    model = ImageModel("baseline", m, channels=channels, image_size=(image_size, image_size))
    own, used = model.state_dict(), set()
    for key in own:
        if not key.endswith(".parametrizations.weight.original1"):
            continue
        layer = key.removesuffix(".parametrizations.weight.original1")
        name = _port_name(layer)
        w, b = _effective(state, name, own[key].shape)
        if name == "nin_out.lin_a":
            order = _output_order(channels, m.nr_logistic_mix)
            w, b = w[order], b[order]
        g_key = f"{layer}.parametrizations.weight.original0"
        axes = (0, 2, 3) if layer.split(".")[1].startswith("upsample") else tuple(range(1, w.dim()))  # our norm's axes
        if b.shape != own[f"{layer}.bias"].shape:
            raise ArsmoothError(f"{name}.bias has shape {tuple(b.shape)}, this network needs {tuple(own[f'{layer}.bias'].shape)}")
        own[key], own[g_key], own[f"{layer}.bias"] = w, torch.linalg.vector_norm(w, dim=axes, keepdim=True), b
        used |= {f"{name}.weight_g", f"{name}.weight_v", f"{name}.bias"}
    extra = sorted(set(state) - used)
    if extra:
        raise ArsmoothError(f"the port's state dict holds {extra[0]!r}{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}"
                            f", which a PixelCNN++ of nr_resnet={m.nr_resnet} has no place for")
    model.load_state_dict(own)
    dataset = "cifar10" if channels == 3 else "mnist"
    settings = Settings(kind="baseline", data=DataSettings(dataset=dataset), model=m)
    return model.eval(), settings


def import_port(path: str | Path, out: str | Path, image_size: int = 32, dataset: str | None = None) -> dict:
    """Write the port's checkpoint ``path`` as a baseline run folder ``out`` (``config.yaml`` + ``last.pt``); every
    check comes before anything is written. Returns what was imported."""
    import yaml

    from ..runtime.fileio import atomic_write_text, digest, make_folder

    out = Path(out)
    if (out / "last.pt").exists() or (out / "config.yaml").exists():
        raise ArsmoothError(f"{out} already holds a run; choose another --out")
    model, settings = convert_port_state(read_port_state(path), image_size)
    if dataset is not None:
        settings = settings.with_values({"data.dataset": dataset})
    make_folder(out)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(settings.to_dict(), sort_keys=False))
    shape = [model.channels, image_size, image_size]
    info = {"imported_from": str(Path(path).resolve()), "sha256": digest(path), "format": "pclucas14/pixel-cnn-pp"}
    ckpt_io.save_checkpoint(out / "last.pt", kind="baseline", model_state=model.state_dict(), config=settings.to_dict(),
                      sigma=None, step=0, extra={"image_shape": shape, "train_seconds": 0.0, "params": count_params(model),
                                                 "stopped": "imported", "init_from": info})
    m = settings.model
    return {"run": str(out), "channels": model.channels, "nr_resnet": m.nr_resnet, "nr_filters": m.nr_filters,
            "nr_logistic_mix": m.nr_logistic_mix, "params": count_params(model), **info}
