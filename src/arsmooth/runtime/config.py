"""Training settings: typed, frozen dataclasses, the one place where defaults and checks live.

A run's settings are :class:`Settings` (sections :class:`DataSettings`, :class:`ModelSettings`,
:class:`SmoothingSettings`, :class:`TrainSettings`, :class:`GpuSettings`). A YAML preset names only what
differs from the defaults; ``--set section.key=value`` overrides go on top::

    load_config("mnist-cpu-stage1", ["train.batch_size=16", "smoothing.sigma=0.3"])

Every section checks its values when it is made, so a bad setting is refused with one line
(:class:`~arsmooth.errors.ArsmoothError`) wherever it comes from. Checkpoints and ``config.yaml`` hold
``settings.to_dict()``; :meth:`Settings.from_dict` reads them back, including those written before a
setting existed (:data:`LEGACY`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Callable

import yaml

from ..errors import ArsmoothError
from ..maths.objectives import OBJECTIVES, RUN_KINDS, objective_of

# The choices of the settings, defined once: models, networks and checkpoints check against these (the
# kinds of run are the objectives' registry, arsmooth.maths.objectives).
STAGE2_LIKELIHOODS = ("discretized", "continuous-jitter")
STAGE2_CONDITIONINGS = ("stacked", "spatial")
DROPOUT_MODES = ("element", "channel")
DROPOUT_MASKS = ("bits", "bernoulli")  # how a CPU training step draws dropout masks (networks.pixelcnnpp)
SMOOTHING_KERNELS = ("gaussian", "laplace", "uniform")
DEVICES = ("auto", "cpu", "cuda")
UNLIMITED_STEPS = 10**9  # the step budget of a run given only a time budget (train --max-minutes alone)

# presets that are another dataset's on their own data: fashion-* are the mnist-* ones on Fashion-MNIST,
# celeba-* the cifar10-* ones on CelebA 32x32 (the paper trains both with the same settings)
DERIVED_PRESETS = {"fashion": ("mnist", "fashion"), "celeba": ("cifar10", "celeba")}

# settings that runs saved before they existed must read as what those runs did, where that differs from
# today's default: F.dropout's masks (model.dropout_masks arrived with bit masks as the new default)
LEGACY = {("model", "dropout_masks"): "bernoulli"}


def _opt(default, help: str):
    """A field with its one-line help (``arsmooth presets --keys``)."""
    return field(default=default, metadata={"help": help})


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ArsmoothError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _choice(section: str, key: str, value, choices: tuple[str, ...]) -> None:
    _need(value in choices, f"{section}.{key} must be one of {', '.join(choices)}, got {value!r}")


def _flag(section: str, key: str, value) -> None:
    _need(isinstance(value, bool), f"{section}.{key} must be true or false, got {value!r}")


def _as_float(obj, *names: str) -> None:
    """YAML reads ``1`` as an int: float settings hold floats (after their checks accepted the number)."""
    for n in names:
        v = getattr(obj, n)
        if _is_int(v):
            object.__setattr__(obj, n, float(v))


@dataclass(frozen=True)
class DataSettings:
    dataset: str = _opt("mnist", "mnist | fashion | cifar10 | digits | celeba | folder:<path>")
    data_root: str | None = _opt(None, "else $ARSMOOTH_DATA, else ./data")
    limit: int | None = _opt(None, "use only the first N training images (quick runs)")
    size: int | None = _opt(None, "folder:<path> only: side length the images are resized to (H = W, divisible by 4)")
    channels: int | None = _opt(None, "folder:<path> only: 1 (greyscale 'L' images) or 3 ('RGB')")
    center_crop: int | None = _opt(None, "folder:<path> only: centre square crop before resizing (else images must be square)")
    test_fraction: float = _opt(0.1, "folder:<path> only: seeded share of the files held out as test; the rest train")

    def __post_init__(self):
        _need(isinstance(self.dataset, str) and self.dataset, f"data.dataset must be a name, got {self.dataset!r}")
        _need(self.data_root is None or isinstance(self.data_root, str), "data.data_root must be a path")
        _need(self.limit is None or (_is_int(self.limit) and self.limit > 0),
              f"data.limit must be a positive integer, got {self.limit!r}")
        for k in ("size", "center_crop"):
            v = getattr(self, k)
            _need(v is None or (_is_int(v) and v > 0), f"data.{k} must be a positive integer or null, got {v!r}")
        _need(self.size is None or self.size % 4 == 0,
              f"data.size must be divisible by 4 (PixelCNN++ halves the image twice), got {self.size!r}")
        _need(self.channels in (None, 1, 3), f"data.channels must be 1 or 3, got {self.channels!r}")
        tf = self.test_fraction
        _need(_is_num(tf) and 0 < tf < 1, f"data.test_fraction must be in (0, 1), got {tf!r}")
        _as_float(self, "test_fraction")
        if self.data_root is not None:  # stored absolute: the run works from any directory
            object.__setattr__(self, "data_root", os.path.abspath(os.path.expanduser(self.data_root)))
        if self.dataset.startswith("folder:"):
            path = self.dataset[len("folder:"):]
            _need(path.strip(), "data.dataset=folder: needs a path, e.g. folder:./my_images")
            object.__setattr__(self, "dataset", "folder:" + os.path.abspath(os.path.expanduser(path)))
            missing = [k for k in ("size", "channels") if getattr(self, k) is None]
            _need(not missing, f"data.dataset={self.dataset} needs {' and '.join('data.' + k for k in missing)}, "
                  "e.g. --set data.size=32 --set data.channels=3")


@dataclass(frozen=True)
class ModelSettings:
    nr_resnet: int = _opt(5, "gated resnet blocks per stage of the network")
    nr_filters: int = _opt(40, "channels of every block")
    nr_logistic_mix: int = _opt(10, "logistic mixture components per pixel")
    dropout: float = _opt(0.5, "dropout rate in the gated resnet blocks")
    dropout_mode: str = _opt("element", "element (nn.Dropout) | channel (whole feature maps, nn.Dropout2d: the official code's)")
    dropout_masks: str = _opt("bits", "CPU: bits (one random bit per draw at p=0.5, fast) | bernoulli (F.dropout's own stream)")
    stage2_likelihood: str = _opt("discretized", "or continuous-jitter (the official code; not 8-bit bits/dim)")
    stage2_conditioning: str = _opt("stacked", "stage 2 sees x~ as the paper's stacked [x~ ; x] image, or spatial (README)")
    fused: bool = _opt(True, "fused concat-ELU/dropout/padding in training (same results, same random numbers)")
    network: str = _opt("pixelcnnpp", "the AR network: pixelcnnpp | transformer (a causal pixel transformer) | one "
                         "registered with arsmooth.networks.register_network")
    tf_width: int = _opt(64, "transformer: features per token")
    tf_layers: int = _opt(4, "transformer: blocks")
    tf_heads: int = _opt(4, "transformer: attention heads (divides tf_width)")
    tf_encoder_blocks: int = _opt(2, "transformer stage 2: residual blocks of the x~ encoder")

    def __post_init__(self):
        for k in ("nr_resnet", "nr_filters", "nr_logistic_mix"):
            low, v = (0 if k == "nr_resnet" else 1), getattr(self, k)
            _need(_is_int(v) and v >= low, f"model.{k} must be an integer >= {low}, got {v!r}")
        _need(_is_num(self.dropout) and 0 <= self.dropout < 1, f"model.dropout must be in [0, 1), got {self.dropout!r}")
        _as_float(self, "dropout")
        _choice("model", "dropout_mode", self.dropout_mode, DROPOUT_MODES)
        _choice("model", "dropout_masks", self.dropout_masks, DROPOUT_MASKS)
        _choice("model", "stage2_likelihood", self.stage2_likelihood, STAGE2_LIKELIHOODS)
        _choice("model", "stage2_conditioning", self.stage2_conditioning, STAGE2_CONDITIONINGS)
        _flag("model", "fused", self.fused)
        _need(self.network in NETWORKS, f"model.network must be one of {', '.join(NETWORKS)}, got {self.network!r} "
              "(a network of your own is registered with arsmooth.networks.register_network before its settings are read)")
        for k in ("tf_width", "tf_layers", "tf_heads", "tf_encoder_blocks"):
            v = getattr(self, k)
            _need(_is_int(v) and v >= (0 if k == "tf_encoder_blocks" else 1), f"model.{k} must be a positive integer, got {v!r}")
        _need(self.tf_width % self.tf_heads == 0,
              f"model.tf_heads ({self.tf_heads}) must divide model.tf_width ({self.tf_width})")

    def shape_keys(self) -> tuple[str, ...]:
        """The settings that fix the network's weight shapes (a warm start needs them equal)."""
        return ("network", *NETWORKS[self.network].shape_keys)

    def describe(self) -> str:
        """The network in a few words, for tables and listings."""
        return NETWORKS[self.network].describe(self)


@dataclass(frozen=True)
class NetworkFamily:
    """What the settings know of a network family: the settings that fix its weight shapes, and a few words
    on a configured network for tables (:func:`arsmooth.networks.register_network` adds families)."""

    shape_keys: tuple[str, ...]
    describe: Callable[[ModelSettings], str]
    stacked: bool = True  # it takes the stacked [x~ ; x] image of a paper-style stage 2 (twice the height)


NETWORKS: dict[str, NetworkFamily] = {
    "pixelcnnpp": NetworkFamily(("nr_resnet", "nr_filters", "nr_logistic_mix"), lambda m: (
        f"PixelCNN++ {m.nr_resnet} resnets / {m.nr_filters} filters / {m.nr_logistic_mix} logistics")),
    "transformer": NetworkFamily(("tf_width", "tf_layers", "tf_heads", "tf_encoder_blocks", "nr_logistic_mix"), lambda m: (
        f"transformer {m.tf_width} wide, {m.tf_layers} blocks, {m.tf_heads} heads, {m.nr_logistic_mix} logistics"),
        stacked=False),
}


@dataclass(frozen=True)
class SmoothingSettings:
    kernel: str = _opt("gaussian", "the noise q(x~ | x): gaussian | laplace | uniform")
    sigma: float = _opt(0.5, "[-1, 1] units; used by stage1 and stage2 (kind smoothed: the initial value)")
    learn_sigma: bool = _opt(False, "kind smoothed only: train log sigma with both stages on the full ELBO (paper sec. 3.3)")

    def __post_init__(self):
        _choice("smoothing", "kernel", self.kernel, SMOOTHING_KERNELS)
        _need(_is_num(self.sigma) and self.sigma > 0, f"smoothing.sigma must be a positive number, got {self.sigma!r}")
        _as_float(self, "sigma")
        _flag("smoothing", "learn_sigma", self.learn_sigma)


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = _opt(80, "images per step (over all processes under torchrun)")
    lr: float = _opt(0.0002, "Adam's learning rate (the paper's App. C)")
    lr_decay: float = _opt(0.999995, "multiplied into the learning rate every step")
    max_steps: int = _opt(100000, "steps to train")
    max_minutes: float | None = _opt(None, "stop (with a checkpoint) after this many minutes")
    ema: float | None = _opt(None, "e.g. 0.999 keeps an exponential moving average of the weights")
    seed: int = _opt(0, "seeds weights, batch order, noise and dropout")
    checkpoint_every: int = _opt(500, "steps")
    checkpoint_minutes: float = _opt(10, "and at least this often in wall time")
    log_every: int = _opt(50, "steps between lines of metrics.jsonl")
    eval_images: int = _opt(1000, "test images scored at each checkpoint (0: none)")

    def __post_init__(self):
        _need(_is_int(self.batch_size) and self.batch_size >= 1,
              f"train.batch_size must be an integer >= 1, got {self.batch_size!r}")
        _need(_is_num(self.lr) and self.lr > 0, f"train.lr must be positive, got {self.lr!r}")
        _need(_is_num(self.lr_decay) and 0 < self.lr_decay <= 1, f"train.lr_decay must be in (0, 1], got {self.lr_decay!r}")
        _need(_is_int(self.max_steps) and self.max_steps >= 0, f"train.max_steps must be an integer >= 0, got {self.max_steps!r}")
        _need(self.max_minutes is None or (_is_num(self.max_minutes) and self.max_minutes > 0),
              f"train.max_minutes must be positive or null, got {self.max_minutes!r}")
        _need(self.ema is None or (_is_num(self.ema) and 0 < self.ema < 1),
              f"train.ema must be in (0, 1) or null, got {self.ema!r}")
        _need(_is_int(self.seed) and self.seed >= 0, f"train.seed must be an integer >= 0, got {self.seed!r}")
        for k in ("checkpoint_every", "log_every"):
            v = getattr(self, k)
            _need(_is_int(v) and v >= 1, f"train.{k} must be an integer >= 1, got {v!r}")
        _need(_is_num(self.checkpoint_minutes) and self.checkpoint_minutes > 0,
              f"train.checkpoint_minutes must be positive, got {self.checkpoint_minutes!r}")
        _need(_is_int(self.eval_images) and self.eval_images >= 0,
              f"train.eval_images must be an integer >= 0, got {self.eval_images!r}")
        _as_float(self, "lr", "lr_decay", "max_minutes", "ema", "checkpoint_minutes")


@dataclass(frozen=True)
class GpuSettings:
    """CUDA only; ignored on CPU, so CPU results never change."""

    bf16: bool = _opt(False, "bf16 autocast of the network (the likelihood stays fp32)")
    channels_last: bool = _opt(False, "channels_last memory format for the network and its inputs")

    def __post_init__(self):
        _flag("gpu", "bf16", self.bf16)
        _flag("gpu", "channels_last", self.channels_last)


SECTIONS = {"data": DataSettings, "model": ModelSettings, "smoothing": SmoothingSettings, "train": TrainSettings,
            "gpu": GpuSettings}


@dataclass(frozen=True)
class Settings:
    """Everything a training run needs; ``kind`` is what it trains (:data:`RUN_KINDS`)."""

    kind: str = _opt("baseline", "; ".join(f"{k}: {o.help}" for k, o in OBJECTIVES.items()))
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    device: str = _opt("auto", "auto | cpu | cuda")
    gpu: GpuSettings = field(default_factory=GpuSettings)

    def __post_init__(self):
        _need(self.kind in RUN_KINDS, f"kind must be one of {', '.join(RUN_KINDS)}, got {self.kind!r}")
        _need(self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        objective = objective_of(self.kind)
        why = objective.check(self)
        _need(why is None, why or "")
        if objective.reverse and not NETWORKS[self.model.network].stacked:
            _need(self.model.stage2_conditioning == "spatial", f"the {self.model.network} network's stage 2 sees x~ "
                  "through its encoder: set model.stage2_conditioning=spatial (the stacked [x~ ; x] design needs a "
                  "network that takes images of twice the height, as PixelCNN++ does)")

    def to_dict(self) -> dict:
        """Plain nested dict (what ``config.yaml`` and checkpoints hold)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "the config") -> Settings:
        """Settings from a nested dict, such as a checkpoint's; keys it lacks take their defaults, or for
        runs saved before a setting existed, the value in :data:`LEGACY`. Unknown keys are refused."""
        if not isinstance(d, dict):
            raise ArsmoothError(f"{where} must hold a mapping of settings, got {type(d).__name__}")
        _known(d, cls, "", where)
        kw = {}
        for f in fields(cls):
            if f.name not in d:
                continue
            if f.name in SECTIONS:
                sec = d[f.name] or {}  # configs written before the gpu section existed have none, or null
                _need(isinstance(sec, dict), f"config key {f.name!r} is a section; give {f.name}.<name>=<value>")
                _known(sec, SECTIONS[f.name], f.name + ".", where)
                old = {k: v for (s, k), v in LEGACY.items() if s == f.name and k not in sec}
                kw[f.name] = SECTIONS[f.name](**{**old, **sec})
            else:
                kw[f.name] = d[f.name]
        return cls(**kw)

    def with_values(self, values: dict) -> Settings:
        """A copy with ``{"section.key": value}`` changed (typed values, checked)."""
        d = self.to_dict()
        for key, value in values.items():
            _merge_into(d, _nested(key, value))
        return Settings.from_dict(d)

    def with_overrides(self, overrides) -> Settings:
        """A copy with ``--set`` texts such as ``train.batch_size=16`` applied (values read as YAML)."""
        d = self.to_dict()
        for text in overrides:
            _merge_into(d, _parse_override(text))
        return Settings.from_dict(d)


def _known(d: dict, cls, path: str, where: str) -> None:
    names = [f.name for f in fields(cls)]
    for k in d:
        _need(k in names, f"unknown config key {path + str(k)!r} in {where}; known keys here: {', '.join(names)}")


def _merge_into(base: dict, over: dict, path: str = "") -> None:
    """Write ``over`` into the nested dict ``base`` (sections stay sections)."""
    for k, v in over.items():
        key = f"{path}{k}"
        if isinstance(base.get(k), dict):
            _need(isinstance(v, dict), f"config key {key!r} is a section; give {key}.<name>=<value>")
            _merge_into(base[k], v, key + ".")
        else:
            _need(k in base, f"unknown config key {key!r}; known keys here: {', '.join(map(str, base))}")
            base[k] = v


def _nested(key: str, value) -> dict:
    """``{"a": {"b": value}}`` for the dotted key ``a.b``."""
    d: dict = {}
    cur = d
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, except that ``1e-3`` and ``2E+4`` are floats, as in YAML 1.2 and Python
    (PyYAML reads a float without a dot in the mantissa as a string)."""


_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ArsmoothError(f"{where} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ArsmoothError(f"{where} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _parse_override(text: str) -> dict:
    if "=" not in text:
        raise ArsmoothError(f"override {text!r} must look like section.key=value (e.g. train.batch_size=16)")
    key, value = text.split("=", 1)
    return _nested(key.strip(), _read_yaml(f"v: {value}", f"override {text!r}")["v"] if value.strip() else None)


def _preset_dir():
    return resources.files("arsmooth") / "presets"


def preset_names() -> list[str]:
    names = sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))
    derived = [n.replace(src, new, 1) for new, (src, _) in DERIVED_PRESETS.items() for n in names if n.startswith(src)]
    return names + sorted(derived)


def preset(name: str) -> Settings:
    """The settings of a preset name (``arsmooth presets``) or of a YAML file path, over the defaults."""
    path = Path(name)
    dataset = None
    if name.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ArsmoothError(f"config file {name} does not exist")
        layer, where = _read_yaml(path.read_text(), str(path)), str(path)
    else:
        file_name = name
        for prefix, (src, data) in DERIVED_PRESETS.items():
            if name.startswith(prefix):
                file_name, dataset = name.replace(prefix, src, 1), data
        file = _preset_dir() / f"{file_name}.yaml"
        if not file.is_file():
            raise ArsmoothError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())} or a .yaml file")
        layer, where = _read_yaml(file.read_text(), f"preset {name}"), f"preset {name}"
    d = Settings().to_dict()
    _merge_into(d, layer)
    if dataset:
        d["data"]["dataset"] = dataset
    return Settings.from_dict(d, where)


def load_config(name: str, overrides=(), values: dict | None = None) -> Settings:
    """Defaults, then a preset name or a YAML file path, then ``key.sub=value`` overrides (text, as ``--set``
    gives them), then ``values`` (``{"key.sub": value}``, typed: code passes numbers without a text round
    trip); every value checked."""
    return preset(name).with_overrides(overrides).with_values(values or {})


def settings_help() -> str:
    """Every setting with its default and help, one per line (``arsmooth presets --keys``)."""
    lines = []

    def walk(cls, prefix: str) -> None:
        for f in fields(cls):
            if f.name in SECTIONS:
                lines.append(f.name)
                walk(SECTIONS[f.name], f.name + ".")
            else:
                shown = yaml.safe_dump(f.default, default_flow_style=True).strip().removesuffix("...").strip()
                lines.append(f"{prefix + f.name:28s} {shown:14s} {f.metadata.get('help', '')}".rstrip())

    walk(Settings, "")
    return "\n".join(lines)
