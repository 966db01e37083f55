"""Models from settings and from checkpoints: the one place a model is rebuilt from what a run saved."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ArsmoothError
from ..maths.objectives import objective_of
from ..runtime import checkpoint as ckpt_io
from ..runtime.config import Settings
from .image_model import ImageModel, SmoothedImageModel


def build_model(cfg: Settings, image_shape: tuple[int, int, int]) -> ImageModel | SmoothedImageModel:
    """The model of ``cfg.kind`` for images ``(C, H, W)``: one network, or the two of the joint ELBO."""
    size = dict(channels=image_shape[0], image_size=tuple(image_shape[1:]))
    if objective_of(cfg.kind).joint:
        return SmoothedImageModel(cfg.model, cfg.smoothing, **size)
    return ImageModel(cfg.kind, cfg.model, **size)


def model_from_checkpoint(ckpt: dict, device: torch.device | str = "cpu", use_ema: bool = True) -> ImageModel:
    """Rebuild a model from a loaded checkpoint (EMA weights when present and ``use_ema``)."""
    shape = tuple(ckpt["extra"]["image_shape"])
    model = build_model(ckpt_io.settings_of(ckpt), shape)
    state = ckpt["ema"] if (use_ema and ckpt.get("ema")) else ckpt["model"]
    holds = "spatial" if any(k.startswith("net.encoder.") for k in state) else "stacked"
    if getattr(model, "conditioning", None) not in (None, holds):  # (a smoothed checkpoint is checked by its keys)
        raise ArsmoothError(f"the checkpoint holds a {holds} stage 2 but its config says "
                            f"model.stage2_conditioning={model.conditioning}; the two designs do not share weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ArsmoothError(f"checkpoint weights do not fit its own config: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def init_weights_from(model: ImageModel, cfg: Settings, path: str | Path) -> dict:
    """Copy the network weights of checkpoint ``path`` into ``model`` (a warm start, e.g. stage 1 from a
    baseline trained on clean data, as in the KTH reproduction of the paper); returns what was done.

    Every weight of the source must fit the target; weights only the target has (a spatial stage 2's
    encoder and conditioning projections) keep their initial values. Refuses a different network shape,
    naming the setting. The optimizer is not copied.
    """
    src = ckpt_io.load_checkpoint(path)
    sm, tm = ckpt_io.settings_of(src).model, cfg.model
    for k in tm.shape_keys():
        if getattr(sm, k) != getattr(tm, k):
            raise ArsmoothError(f"--init-from {path} has model.{k}={getattr(sm, k)}, this run model.{k}={getattr(tm, k)}; "
                                "a warm start needs the same network shape")
    src_ch, own_ch = src["extra"]["image_shape"][0], model.channels
    if src_ch != own_ch:
        raise ArsmoothError(f"--init-from {path} was trained on {src_ch}-channel images, this run has {own_ch}")
    state, own = src["model"], model.state_dict()
    extra_keys = [k for k in state if k not in own]
    if extra_keys:
        raise ArsmoothError(f"--init-from {path} holds weights this model has no place for ({extra_keys[0]}, ...); "
                            "a spatial stage 2 cannot start a stacked one or another kind")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise ArsmoothError(f"--init-from {path}: weight {k} is {tuple(v.shape)} there, {tuple(own[k].shape)} here")
    own.update(state)
    model.load_state_dict(own)
    return {"path": str(path), "kind": src["kind"], "step": src["step"], "copied": len(state),
            "kept_initial": len([k for k in own if k not in state])}
