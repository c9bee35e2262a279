"""load_config / config_from_dict / read_yaml: one-line errors naming file, key path, value, allowed values."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from autoprune.config import StudyConfig, config_from_dict, load_config
from autoprune.errors import ConfigError
from autoprune.yamlio import load_yaml_file as read_yaml
from autoprune.yamlio import stable_hash

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, data, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny(tiny_study):
    """``tiny(model__cell="gru")``: a copy of the tiny study with keys (``__``-separated paths) changed."""

    def make(**changes) -> dict:
        data = copy.deepcopy(tiny_study)
        for dotted, value in changes.items():
            cur = data
            *parents, leaf = dotted.split("__")
            for p in parents:
                cur = cur.setdefault(p, {})
            cur[leaf] = value
        return data

    return make


def test_valid_config_loads_with_defaults(tmp_path, tiny):
    cfg = load_config(_write(tmp_path, tiny()))
    assert isinstance(cfg, StudyConfig)
    assert cfg.study == "tiny"
    assert cfg.model.hidden_sizes == [16]
    assert cfg.model.cell == "lstm" and cfg.model.pooling == "last" and not cfg.model.bidirectional
    assert cfg.train.epochs == 3 and cfg.train.optimizer == "adam"  # given / default
    assert cfg.train.grad_clip.value == 1.0 and cfg.train.grad_clip.algorithm == "norm"
    assert cfg.task.val_fraction == 0.2
    assert cfg.source == str(tmp_path / "study.yaml")
    assert "source" not in cfg.to_dict()


def test_unknown_key_names_the_key_path_and_allowed_keys(tmp_path, tiny):
    path = _write(tmp_path, tiny(model__hiden_sizes=[4]))
    with pytest.raises(ConfigError, match=r"unknown key .model\.hiden_sizes.") as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: unknown key 'model.hiden_sizes'")
    assert "allowed keys here: cell, hidden_sizes, bidirectional, dropout, pooling, attention_dim" in msg


def test_unknown_nested_and_top_level_keys(tmp_path, tiny):
    with pytest.raises(ConfigError, match=r"unknown key 'train\.grad_clip\.thresh'; allowed keys here: value, algorithm"):
        config_from_dict(tiny(train__grad_clip__thresh=1.0), source="s.yaml")
    with pytest.raises(ConfigError, match=r"^s\.yaml: unknown key 'epochs'; allowed keys here: study, seed, task, model, train, measure"):
        config_from_dict(tiny(epochs=3), source="s.yaml")


def test_wrong_type_names_key_and_value(tmp_path, tiny):
    path = _write(tmp_path, tiny(train__epochs="many"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: train.epochs: ") + r".*valid integer.*\(got 'many'\)"):
        load_config(path)


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"train__epochs": 0}, r"train\.epochs: .*greater than or equal to 1 \(got 0\)"),
        ({"task__val_fraction": 1.5}, r"task\.val_fraction: .*less than 1 \(got 1\.5\)"),
        ({"model__dropout": -0.1}, r"model\.dropout: .*greater than or equal to 0"),
        ({"model__hidden_sizes": [16, 0]}, r"model\.hidden_sizes: .*every hidden size must be in \[1, 8192\], got 0"),
        ({"model__hidden_sizes": [4, 4, 4, 4]}, r"model\.hidden_sizes: .*at most 3 items"),
        ({"train__lr": 0}, r"train\.lr: .*greater than 0"),
    ],
)
def test_out_of_range_values(change, pattern, tiny):
    with pytest.raises(ConfigError, match=r"^s\.yaml: " + pattern):
        config_from_dict(tiny(**change), source="s.yaml")


def test_literal_values_list_the_allowed_ones(tiny):
    with pytest.raises(ConfigError, match=r"model\.cell: Input should be 'lstm' or 'gru' \(got 'rnn'\)"):
        config_from_dict(tiny(model__cell="rnn"), source="s.yaml")
    # mean pooling is part of the family since issue 20: an unknown pooling lists the valid ones
    with pytest.raises(ConfigError, match=r"model\.pooling: Input should be 'last', 'last_output', 'mean', 'max', 'attention' or 'none' \(got 'median'\)"):
        config_from_dict(tiny(model__pooling="median"), source="s.yaml")


def test_bad_study_name(tiny):
    with pytest.raises(ConfigError, match=r"study: String should match pattern .*\(got 'has space'\)"):
        config_from_dict(tiny(study="has space"), source="s.yaml")


def test_missing_keys(tmp_path, tiny):
    data = tiny()
    del data["model"]
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: missing required key 'model'")):
        load_config(path)
    data = tiny()
    del data["task"]["name"]
    with pytest.raises(ConfigError, match=r"^s\.yaml: missing required key 'task\.name'"):
        config_from_dict(data, source="s.yaml")


def test_several_problems_are_counted(tiny):
    with pytest.raises(ConfigError, match=r"\(and 1 more problem\)$"):
        config_from_dict(tiny(train__epochs=0, train__lr=-1.0), source="s.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "study: x\ntask:\n  name: synthetic:sines\nmodel: {cell: lstm, hidden_sizes: [4\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:") + r"\d+: malformed YAML") as info:
        load_config(path)
    line = int(re.match(re.escape(f"{path}:") + r"(\d+)", str(info.value)).group(1))
    assert line in (4, 5)  # the unclosed flow sequence on line 4 (reported at end of input)
    bad_indent = _write(tmp_path, "study: x\ntask:\n  name: a\n   batch: 2\n", "indent.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"{bad_indent}:4: malformed YAML")):
        read_yaml(bad_indent)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")
    path = _write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match=r"the top level must be a mapping .* got list"):
        load_config(path)


def test_overrides_replace_dotted_keys_and_none_sets_null(tmp_path, tiny):
    path = _write(tmp_path, tiny())
    cfg = load_config(path, overrides={"study": "other", "train.epochs": 7, "model.hidden_sizes": [8, 4]})
    assert cfg.study == "other"
    assert cfg.train.epochs == 7
    assert cfg.model.hidden_sizes == [8, 4]
    assert cfg.seed == tiny()["seed"]  # a key left out keeps the file's value
    assert cfg.search.early_stop.after_epochs is not None
    # an explicit None sets the key to null: it turns an optional setting off (here: early stopping)
    off = load_config(path, overrides={"search.early_stop.after_epochs": None})
    assert off.search.early_stop.after_epochs is None
    # and where null is not allowed, the error names the key
    with pytest.raises(ConfigError, match=r"seed"):
        load_config(path, overrides={"seed": None})
    cfg2 = load_config(path, overrides={"train.grad_clip.algorithm": "value"})
    assert cfg2.train.grad_clip.algorithm == "value" and cfg2.train.grad_clip.value == 1.0
    with pytest.raises(ConfigError, match=r"train\.epochs: .*greater than or equal to 1 \(got 0\)"):
        load_config(path, overrides={"train.epochs": 0})
    # overrides never change the caller's data
    data = tiny()
    config_from_dict(data, overrides={"train.epochs": 9})
    assert data["train"]["epochs"] == 3


def test_configs_are_frozen(tiny):
    cfg = config_from_dict(tiny())
    with pytest.raises(ValidationError, match="Instance is frozen"):
        cfg.train.epochs = 5  # type: ignore[misc]


def test_dense_key_and_stable_hash(tiny):
    a = config_from_dict(tiny())
    b = config_from_dict(tiny(measure__repeats=10))
    c = config_from_dict(tiny(train__lr=0.02))
    assert stable_hash(a.dense_key()) == stable_hash(b.dense_key())  # measurement is not training
    assert stable_hash(a.dense_key()) != stable_hash(c.dense_key())
    assert stable_hash({"x": 1, "y": 2}) == stable_hash({"y": 2, "x": 1})


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.study == path.stem
    assert cfg.model.hidden_sizes


def test_there_are_shipped_configs():
    assert len(list((ROOT / "search_spaces").glob("*.yaml"))) >= 2


def test_model_layers_are_checked_one_line_each(tiny):
    """Issue 20: a model autoprune trains lists its front-end, gaps and head layers; every key is checked."""
    cfg = config_from_dict(tiny(model__front=[{"kind": "conv1d", "out": 8, "kernel": 3}, "relu"], model__head=[{"kind": "linear", "out": 4}, "gelu"],
                                model__between=["layernorm"], model__pooling="max"), source="s.yaml")
    assert cfg.model.front[0] == {"kind": "conv1d", "out": 8, "kernel": 3, "stride": 1, "padding": 0, "dilation": 1, "bias": True}
    assert cfg.model.head == [{"kind": "linear", "out": 4, "bias": True}, {"kind": "gelu"}]
    assert "front" in cfg.dense_key()["model"] and "rnn" not in cfg.dense_key()["model"]
    for change, message in [
        ({"model__front": ["conv2d"]}, "model: front[0]: layer kind 'conv2d' cannot stand in the front-end; allowed there: embedding, linear, conv1d, batchnorm"),
        ({"model__front": [{"kind": "conv1d", "out": 8}]}, "model: front[0]: a conv1d layer needs 'kernel'"),
        ({"model__head": [{"kind": "linear", "out": 4, "size": 3}]}, "model: head[0]: unknown key(s) ['size'] for a linear layer; allowed: kind, out, bias"),
        ({"model__between": [{"kind": "dropout", "p": 1.5}]}, "model: between[0]: dropout.p must be in [0, 1), got 1.5"),
        ({"model__between": [{"kind": "linear", "out": 4}]}, "model: between[0]: layer kind 'linear' cannot stand in the gap between recurrent layers; allowed there: batchnorm, layernorm, dropout"),
        ({"model__rnn": ["lstm"]}, "model: 'rnn' names the recurrent submodules of your own model"),
    ]:
        with pytest.raises(ConfigError, match="^" + re.escape("s.yaml: " + message)):
            config_from_dict(tiny(**change), source="s.yaml")
