"""Typed settings: one place for defaults and checks; presets, overrides and saved runs map onto them."""

import dataclasses
import inspect

import pytest
import yaml

from arsmooth.errors import ArsmoothError
from arsmooth.models.image_model import ImageModel, SmoothedImageModel
from arsmooth.networks.pixelcnnpp import GatedResnet, PixelCNNpp
from arsmooth.runtime import config as K
from arsmooth.runtime.config import Settings, load_config, preset_names


def test_every_preset_round_trips_through_a_plain_dict_and_yaml():
    for name in preset_names():
        s = load_config(name)
        assert Settings.from_dict(s.to_dict()) == s
        assert Settings.from_dict(yaml.safe_load(yaml.safe_dump(s.to_dict(), sort_keys=False))) == s


def test_settings_are_frozen_and_checked_when_made():
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.train.lr = 1.0
    with pytest.raises(ArsmoothError, match="train.lr must be positive"):
        dataclasses.replace(s.train, lr=-1.0)
    with pytest.raises(ArsmoothError, match="kind smoothed needs model.stage2_likelihood=discretized"):
        s.with_values({"kind": "smoothed", "model.stage2_likelihood": "continuous-jitter"})
    assert isinstance(s.with_overrides(["smoothing.sigma=1"]).smoothing.sigma, float)  # YAML's 1 held as 1.0


def test_unknown_keys_are_refused_wherever_they_come_from():
    with pytest.raises(ArsmoothError, match="unknown config key 'train.lrr'"):
        load_config("digits-baseline", ["train.lrr=1"])
    with pytest.raises(ArsmoothError, match="unknown config key 'model.width' in the checkpoint's config"):
        Settings.from_dict({"model": {"width": 3}}, "the checkpoint's config")
    with pytest.raises(ArsmoothError, match="is a section"):
        load_config("digits-baseline", ["train=3"])


def test_saved_runs_without_a_later_setting_read_as_they_trained():
    old = Settings().to_dict()
    for (section, key), value in K.LEGACY.items():
        del old[section][key]
        assert getattr(getattr(Settings.from_dict(old), section), key) == value
    del old["gpu"]  # configs written before the gpu section existed
    assert Settings.from_dict(old).gpu == K.GpuSettings()


def test_defaults_live_in_the_settings_only():
    """Constructors take the settings and hold no defaults of their own (a second source of truth)."""
    for fn in (ImageModel.__init__, SmoothedImageModel.__init__, PixelCNNpp.__init__, GatedResnet.__init__):
        params = list(inspect.signature(fn).parameters.values())[1:]
        with_default = {p.name for p in params if p.default is not inspect.Parameter.empty}
        assert not with_default, f"{fn.__qualname__} has defaults of its own: {with_default}"


def test_every_setting_is_documented_in_presets_keys():
    shown = K.settings_help()
    for section, cls in K.SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{section}.{f.name} has no help text"
            assert f"{section}.{f.name} " in shown
    assert "\nkind " in "\n" + shown and "\ndevice " in "\n" + shown
