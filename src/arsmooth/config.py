"""Training configurations: YAML presets merged over ``_defaults.yaml``, plus dotted overrides.

``load_config("mnist-cpu-stage1", ["train.batch_size=16", "smoothing.sigma=0.3"])`` returns a plain
nested dict (stored as-is in checkpoints). Unknown keys, bad types and out-of-range values are
refused with a one-line :class:`~arsmooth.errors.ArsmoothError`.
"""

from __future__ import annotations

import copy
import math
import re
from importlib import resources
from pathlib import Path

import yaml

from .errors import ArsmoothError

# presets that are another dataset's on their own data: fashion-* are the mnist-* ones on Fashion-MNIST,
# celeba-* the cifar10-* ones on CelebA 32x32 (the paper trains both with the same settings)
DERIVED_PRESETS = {"fashion": ("mnist", "fashion"), "celeba": ("cifar10", "celeba")}


def _preset_dir():
    return resources.files("arsmooth") / "presets"


def preset_names() -> list[str]:
    names = sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".yaml") and not p.name.startswith("_"))
    derived = [n.replace(src, new, 1) for new, (src, _) in DERIVED_PRESETS.items() for n in names if n.startswith(src)]
    return names + sorted(derived)


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


def defaults() -> dict:
    return _read_yaml((_preset_dir() / "_defaults.yaml").read_text(), "_defaults.yaml")


def _merge(base: dict, over: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        key = f"{path}{k}"
        if k not in base:
            raise ArsmoothError(f"unknown config key {key!r}; known keys here: {', '.join(map(str, base))}")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ArsmoothError(f"config key {key!r} is a section; give {key}.<name>=<value>")
            out[k] = _merge(base[k], v, key + ".")
        else:
            out[k] = v
    return out


def _parse_override(text: str) -> dict:
    if "=" not in text:
        raise ArsmoothError(f"override {text!r} must look like section.key=value (e.g. train.batch_size=16)")
    key, value = text.split("=", 1)
    return _nested(key.strip(), _read_yaml(f"v: {value}", f"override {text!r}")["v"] if value.strip() else None)


def _nested(key: str, value) -> dict:
    """``{"a": {"b": value}}`` for the dotted key ``a.b``."""
    d: dict = {}
    cur = d
    parts = key.split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return d


# The choices of the settings, defined once: models, networks and checkpoints check against these.
KINDS = ("baseline", "stage1", "stage2")  # one network each
RUN_KINDS = (*KINDS, "smoothed")  # what a run trains and a checkpoint holds: smoothed = stages 1 and 2 together
STAGE2_LIKELIHOODS = ("discretized", "continuous-jitter")
STAGE2_CONDITIONINGS = ("stacked", "spatial")
DROPOUT_MODES = ("element", "channel")
DROPOUT_MASKS = ("bits", "bernoulli")  # how a CPU training step draws dropout masks (networks.pixelcnnpp)


def load_config(preset: str, overrides: list[str] | tuple[str, ...] = (), values: dict | None = None) -> dict:
    """Defaults, then a preset name or a YAML file path, then ``key.sub=value`` overrides (text, as ``--set``
    gives them), then ``values`` (``{"key.sub": value}``, typed: code passes numbers without a text round
    trip); validated."""
    cfg = defaults()
    path = Path(preset)
    dataset = None
    if preset.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ArsmoothError(f"config file {preset} does not exist")
        layer = _read_yaml(path.read_text(), str(path))
    else:
        name = preset
        for prefix, (src, data) in DERIVED_PRESETS.items():
            if preset.startswith(prefix):
                name, dataset = preset.replace(prefix, src, 1), data
        file = _preset_dir() / f"{name}.yaml"
        if not file.is_file():
            raise ArsmoothError(f"unknown preset {preset!r}; choose one of {', '.join(preset_names())} or a .yaml file")
        layer = _read_yaml(file.read_text(), f"preset {preset}")
    cfg = _merge(cfg, layer)
    if dataset:
        cfg["data"]["dataset"] = dataset
    for o in overrides:
        cfg = _merge(cfg, _parse_override(o))
    for key, value in (values or {}).items():
        cfg = _merge(cfg, _nested(key, value))
    validate(cfg)
    return cfg


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ArsmoothError(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def validate(cfg: dict) -> None:
    """Types and ranges of every setting; one clear message for the first bad one."""

    _need(cfg["kind"] in RUN_KINDS, f"kind must be one of {', '.join(RUN_KINDS)}, got {cfg['kind']!r}")
    d, m, s, t = cfg["data"], cfg["model"], cfg["smoothing"], cfg["train"]
    _need(isinstance(d["dataset"], str) and d["dataset"], f"data.dataset must be a name, got {d['dataset']!r}")
    _need(d["data_root"] is None or isinstance(d["data_root"], str), "data.data_root must be a path")
    _need(d["limit"] is None or (_is_int(d["limit"]) and d["limit"] > 0), f"data.limit must be a positive integer, got {d['limit']!r}")
    for k in ("size", "center_crop"):
        _need(d.get(k) is None or (_is_int(d[k]) and d[k] > 0), f"data.{k} must be a positive integer or null, got {d.get(k)!r}")
    _need(d.get("size") is None or d["size"] % 4 == 0,
          f"data.size must be divisible by 4 (PixelCNN++ halves the image twice), got {d.get('size')!r}")
    _need(d.get("channels") in (None, 1, 3), f"data.channels must be 1 or 3, got {d.get('channels')!r}")
    tf = d.get("test_fraction", 0.1)
    _need(_is_num(tf) and 0 < tf < 1, f"data.test_fraction must be in (0, 1), got {tf!r}")
    if d["dataset"].startswith("folder:"):
        missing = [k for k in ("size", "channels") if d.get(k) is None]
        _need(not missing, f"data.dataset={d['dataset']} needs {' and '.join('data.' + k for k in missing)}, "
              "e.g. --set data.size=32 --set data.channels=3")
    for k in ("nr_resnet", "nr_filters", "nr_logistic_mix"):
        low = 0 if k == "nr_resnet" else 1
        _need(_is_int(m[k]) and m[k] >= low, f"model.{k} must be an integer >= {low}, got {m[k]!r}")
    _need(_is_num(m["dropout"]) and 0 <= m["dropout"] < 1, f"model.dropout must be in [0, 1), got {m['dropout']!r}")
    _need(m["stage2_likelihood"] in STAGE2_LIKELIHOODS,
          f"model.stage2_likelihood must be one of {', '.join(STAGE2_LIKELIHOODS)}, got {m['stage2_likelihood']!r}")
    _need(m.get("stage2_conditioning", "stacked") in STAGE2_CONDITIONINGS,
          f"model.stage2_conditioning must be one of {', '.join(STAGE2_CONDITIONINGS)}, got {m.get('stage2_conditioning')!r}")
    _need(isinstance(m.get("fused", True), bool), f"model.fused must be true or false, got {m.get('fused')!r}")
    _need(m.get("dropout_mode", "element") in DROPOUT_MODES,
          f"model.dropout_mode must be one of {', '.join(DROPOUT_MODES)}, got {m.get('dropout_mode')!r}")
    _need(m.get("dropout_masks", "bernoulli") in DROPOUT_MASKS,
          f"model.dropout_masks must be one of {', '.join(DROPOUT_MASKS)}, got {m.get('dropout_masks')!r}")
    _need(s["kernel"] in ("gaussian", "laplace", "uniform"), f"smoothing.kernel must be gaussian, laplace or uniform, got {s['kernel']!r}")
    _need(_is_num(s["sigma"]) and s["sigma"] > 0, f"smoothing.sigma must be a positive number, got {s['sigma']!r}")
    _need(isinstance(s.get("learn_sigma", False), bool), f"smoothing.learn_sigma must be true or false, got {s.get('learn_sigma')!r}")
    if s.get("learn_sigma", False):
        _need(cfg["kind"] == "smoothed", "smoothing.learn_sigma=true needs kind=smoothed (both stages trained together "
              "on the ELBO, e.g. the mnist-cpu-smoothed preset)")
    if cfg["kind"] == "smoothed":
        _need(s["kernel"] == "gaussian", f"kind smoothed trains a Gaussian q(x~ | x), got smoothing.kernel={s['kernel']}")
        _need(m["stage2_likelihood"] == "discretized", "kind smoothed needs model.stage2_likelihood=discretized")
    _need(_is_int(t["batch_size"]) and t["batch_size"] >= 1, f"train.batch_size must be an integer >= 1, got {t['batch_size']!r}")
    _need(_is_num(t["lr"]) and t["lr"] > 0, f"train.lr must be positive, got {t['lr']!r}")
    _need(_is_num(t["lr_decay"]) and 0 < t["lr_decay"] <= 1, f"train.lr_decay must be in (0, 1], got {t['lr_decay']!r}")
    _need(_is_int(t["max_steps"]) and t["max_steps"] >= 0, f"train.max_steps must be an integer >= 0, got {t['max_steps']!r}")
    _need(t["max_minutes"] is None or (_is_num(t["max_minutes"]) and t["max_minutes"] > 0),
          f"train.max_minutes must be positive or null, got {t['max_minutes']!r}")
    _need(t["ema"] is None or (_is_num(t["ema"]) and 0 < t["ema"] < 1), f"train.ema must be in (0, 1) or null, got {t['ema']!r}")
    _need(_is_int(t["seed"]) and t["seed"] >= 0, f"train.seed must be an integer >= 0, got {t['seed']!r}")
    for k in ("checkpoint_every", "log_every"):
        _need(_is_int(t[k]) and t[k] >= 1, f"train.{k} must be an integer >= 1, got {t[k]!r}")
    _need(_is_num(t["checkpoint_minutes"]) and t["checkpoint_minutes"] > 0,
          f"train.checkpoint_minutes must be positive, got {t['checkpoint_minutes']!r}")
    _need(_is_int(t["eval_images"]) and t["eval_images"] >= 0, f"train.eval_images must be an integer >= 0, got {t['eval_images']!r}")
    _need(cfg["device"] in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, got {cfg['device']!r}")
    gpu = cfg.get("gpu") or {}  # configs written before the gpu section existed have none
    for k in ("bf16", "channels_last"):
        _need(isinstance(gpu.get(k, False), bool), f"gpu.{k} must be true or false, got {gpu.get(k)!r}")


def settings_help() -> str:
    """Every setting with its default and the comment ``_defaults.yaml`` gives it, one per line."""
    lines, section = [], None
    for raw in (_preset_dir() / "_defaults.yaml").read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        key, _, rest = raw.strip().partition(":")
        value, _, comment = rest.partition("#")
        if indent == 0:
            section = key if not value.strip() else None
            name = key
        else:
            name = f"{section}.{key}"
        if value.strip() or indent:
            lines.append(f"{name:28s} {value.strip():14s} {comment.strip()}".rstrip())
    return "\n".join(lines)
