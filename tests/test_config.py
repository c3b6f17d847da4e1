"""Config loading: presets, overrides, and one clear error per kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from grl_aecnn.config import ConfigError, ExperimentConfig, dump_config, load_config, preset_names


def test_presets_load_and_validate() -> None:
    assert {"quick", "paper"} <= set(preset_names())
    quick = load_config("quick")
    paper = load_config("paper")
    assert quick.backbone.arch == "resnet18" and quick.data.dataset == "fashion-mnist"
    assert paper.backbone.arch == "resnet50" and paper.data.input_size == 224
    assert paper.data.dataset == "caltech101" and not paper.data.download
    assert (paper.scenario.num_devices, paper.scenario.num_servers) == (14, 2)


def test_overrides_are_typed_yaml_values() -> None:
    cfg = load_config("quick", ["backbone.epochs=2", "backbone.use_gpu=true", "data.train_subset=null",
                                "codecs.aecnn.kept_channels=[1, 3]"])
    assert cfg.backbone.epochs == 2 and cfg.backbone.use_gpu is True
    assert cfg.data.train_subset is None and cfg.codecs.aecnn.kept_channels == [1, 3]


def test_yaml_file_round_trip(tmp_path: Path) -> None:
    cfg = load_config("quick", ["name=roundtrip", "backbone.epochs=7"])
    path = tmp_path / "exp.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("backbone.epoch=2", "backbone.epoch: unknown key; allowed keys here: arch,"),
        ("backbone.epochs=two", "backbone.epochs: Input should be a valid integer"),
        ("backbone.epochs=0", "backbone.epochs: Input should be greater than or equal to 1"),
        ("backbone.arch=vgg16", "backbone.arch: Input should be 'resnet18', 'resnet50', 'mobilenet_v2' or 'efficientnet_b0'"),
        ("data.dataset=cifar", "data.dataset: Input should be 'fashion-mnist', 'digits', 'caltech101' or"),
        ("nosuchsection.x=1", "nosuchsection: unknown key; allowed keys here: backbone, codecs,"),
        ("backbone=3", "backbone: Input should be a valid dictionary"),
        ("name=a/b", "name: 'a/b' is not allowed"),
        ("codecs.seeds=0", "codecs.seeds: Input should be greater than or equal to 1"),
        ("codecs.seeds=1.5", "codecs.seeds: Input should be a valid integer"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("quick", [override])
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_each_family_loads_with_its_own_split_points() -> None:
    from grl_aecnn.backbone.split_points import SPLIT_CHANNELS

    for arch, table in SPLIT_CHANNELS.items():
        for split in table:
            cfg = load_config("tiny", [f"backbone.arch={arch}", f"codecs.split={split}"])
            assert (cfg.backbone.arch, cfg.codecs.split) == (arch, split)
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["backbone.arch=mobilenet_v2", "codecs.split=layer1"])
    assert str(err.value) == ("codecs.split: 'layer1' is not a split point of mobilenet_v2 "
                              "(allowed: stem, stage1, stage2, stage3)")
    with pytest.raises(ConfigError, match=r"\[32\] exceed the 16 channels of efficientnet_b0 at split 'stage1'"):
        load_config("tiny", ["backbone.arch=efficientnet_b0", "codecs.split=stage1",
                             "codecs.aecnn.kept_channels=[2,32]"])


@pytest.mark.parametrize("override", ["backbone.epochs", "=3", "backbone.epochs=[1"])
def test_malformed_overrides(override: str) -> None:
    with pytest.raises(ConfigError, match="--set"):
        load_config("quick", [override])


def test_unknown_preset_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config 'nope': use a preset"):
        load_config("nope")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not sections\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(bad))


def test_stage_hash_tracks_only_the_sections_a_stage_reads() -> None:
    base = load_config("quick")
    changed_eval = load_config("quick", ["evaluation.episodes=7"])
    changed_backbone = load_config("quick", ["backbone.lr=0.01"])
    assert base.stage_hash("backbone") == changed_eval.stage_hash("backbone")
    assert base.stage_hash("evaluation") != changed_eval.stage_hash("evaluation")
    assert base.stage_hash("backbone") != changed_backbone.stage_hash("backbone")
    assert base.stage_hash("codecs") != changed_backbone.stage_hash("codecs")


def test_flat_params_cover_every_leaf() -> None:
    flat = ExperimentConfig().flat()
    assert flat["backbone.epochs"] == ExperimentConfig().backbone.epochs
    assert all(not isinstance(v, dict) for v in flat.values())


def test_split_channel_table_matches_the_models() -> None:
    """The torch-free table the config checks kept channels against is what the real models cut to."""
    from grl_aecnn.backbone.models import build_model
    from grl_aecnn.backbone.split import split_info
    from grl_aecnn.backbone.split_points import SPLIT_CHANNELS

    for arch, table in SPLIT_CHANNELS.items():
        model = build_model(arch, 10).eval()
        assert {s: split_info(model, s, 32).shape[0] for s in table} == table, arch
