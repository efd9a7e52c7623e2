from __future__ import annotations

import pytest

from mechlens import config
from mechlens.errors import ConfigError
from mechlens.registry import Registry


@pytest.fixture
def reg():
    import types

    from mechlens import hookimpl
    from mechlens.toymodels import ToyCNN, ToyNoise

    mod = types.ModuleType("toys")
    mod.mechlens_models = hookimpl(lambda: [ToyCNN])
    mod.mechlens_stimuli = hookimpl(lambda: [ToyNoise])
    r = Registry(autoload=False)
    r.register(mod, distribution="tests")
    return r


def write(tmp_path, text):
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_valid_config_and_overrides(tmp_path, reg):
    cfg = config.load(write(tmp_path, '[model]\nname = "toy-cnn"\n[stimulus]\nname = "toy-noise"\ncontrast = 0.5\n'))
    config.apply_overrides(cfg, ["stimulus.contrast=[0.2, 0.4]", "run.seed=4", "model.n_cells=2"])
    config.check(cfg, reg)
    assert cfg.stimulus.params == {"contrast": [0.2, 0.4]}
    assert cfg.options().seed == 4
    assert cfg.model.params == {"n_cells": 2}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            '[stimulus]\nname = "toy-noise"\ncontrats = 1\n',
            r"stimulus\.contrats: unknown parameter; did you mean contrast\?",
        ),
        ('[stimulus]\nname = "toy-noise"\ncontrast = "high"\n', r"stimulus\.contrast: expected"),
        ('[stimulus]\nname = "toy-noize"\n', r"did you mean toy-noise\?"),
        ('[stimulu]\nname = "x"\n', r"\[stimulu\]: unknown section; did you mean stimulus\?"),
        ("[run]\nsed = 1\n", r"run\.sed: unknown parameter; did you mean seed\?"),
        ("[stimulus]\ncontrast = 1\n", "sets parameters but no name"),
        ("[stimulus\n", "not valid TOML"),
    ],
)
def test_config_errors_name_the_path(tmp_path, reg, text, match):
    with pytest.raises(ConfigError, match=match):
        config.check(config.load(write(tmp_path, text)), reg)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(tmp_path / "nope.toml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"expected stage\.param=value"):
        config.apply_overrides(config.RunConfig(), ["seed"])
    with pytest.raises(ConfigError, match="unknown stage 'stimuls'"):
        config.apply_overrides(config.RunConfig(), ["stimuls.x=1"])


def test_values_parse_as_toml():
    assert config.parse_value("0.1") == 0.1
    assert config.parse_value("[1, 2]") == [1, 2]
    assert config.parse_value("true") is True
    assert config.parse_value("conv1") == "conv1"
