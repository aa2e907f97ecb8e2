import dataclasses

import pytest
import yaml

from embedlib.config import ConfigError, config_from_dict, load_config
from tests.helpers import REPO


@pytest.mark.parametrize("name", ["local.yaml", "movielens.yaml", "cluster.example.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "conf" / name)
    assert cfg.source.endswith(name)
    # Every value written in the file is the value loaded (a loader that dropped or
    # defaulted a key would differ somewhere; each file sets non-default values).
    loaded = dataclasses.asdict(cfg)
    written = list(_leaves(yaml.safe_load((REPO / "conf" / name).read_text())))
    assert len(written) > 10
    for keys, value in written:
        node = loaded
        for key in keys:
            node = node[key]
        assert node == value, (".".join(keys), node, value)


def _leaves(node, keys=()):
    """(key path, value) of every scalar or list in a YAML mapping."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*keys, key))
        else:
            yield (*keys, key), value


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sequences:\n  sesion_gap_seconds: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*'sequences.sesion_gap_seconds'"):
        load_config(path)


def test_mistyped_value_names_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sequences:\n  min_count: many\n")
    with pytest.raises(ConfigError, match=r"'sequences.min_count' must be int, got str"):
        load_config(path)


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="min_count"):
        config_from_dict({"sequences": {"min_count": True}})


def test_set_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input:\n  path: a\n")
    cfg = load_config(path, ["sequences.min_count=7", "input.event_types=[click, view]",
                             "input.columns.weight=rating", "spark.hive_metastore_uris="])
    assert cfg.sequences.min_count == 7
    assert cfg.input.event_types == ["click", "view"]
    assert cfg.input.columns.weight == "rating"
    assert cfg.spark.hive_metastore_uris is None
    assert "--set sequences.min_count=7" in cfg.source


def test_set_reaches_into_optional_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    cfg = load_config(path, ["stabilize.items.path=/data/items.parquet", "stabilize.items.id_col=item_id"])
    assert (cfg.stabilize.items.path, cfg.stabilize.items.id_col) == ("/data/items.parquet", "item_id")
    assert cfg.stabilize.other is None
    with pytest.raises(ConfigError, match="unknown key 'stabilize.items.pth'"):
        load_config(path, ["stabilize.items.pth=x"])


def test_set_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"--set sequences.min_cnt: unknown key 'sequences.min_cnt' "
                                          r"\(known keys here: .*lookback_days, max_session_length, min_count,"):
        load_config(path, ["sequences.min_cnt=3"])
    with pytest.raises(ConfigError, match="spark.master is a value, not a section"):
        load_config(path, ["spark.master.x=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["sequences.min_count"])


def test_invalid_choice_and_range():
    with pytest.raises(ConfigError, match="input.time_unit must be one of s, ms, timestamp"):
        config_from_dict({"input": {"time_unit": "minutes"}})
    with pytest.raises(ConfigError, match="sequences.min_count must be >= 1"):
        config_from_dict({"sequences": {"min_count": 0}})


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("conf/nope.yaml")
