"""Ablations: the ablation file and CLI refuse bad input with one line, the statistics and
verdicts are right, each ablated mechanism does what its row says, and one ablation runs end to
end on digits through real Tune trials and real bitstreams."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_pipelines.shards import SplitArray
from grl_aecnn.ablate.experiment import Trial, seeds_of
from grl_aecnn.ablate.report import build_table, markdown, plot
from grl_aecnn.ablate.selection import channel_importance
from grl_aecnn.ablate.settings import AblationConfig, load_ablation
from grl_aecnn.ablate.stats import estimate, paired_difference
from grl_aecnn.backbone.models import build_model
from grl_aecnn.cli import EXIT_CONFIG, main
from grl_aecnn.codecs.aecnn import AECNNCodec
from grl_aecnn.codecs.seeds import trial_id, trial_seeds
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.store import load_codec, save_codec
from grl_aecnn.codecs.training import train_codec


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], expect: str) -> None:
    assert main(argv) == EXIT_CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines


@pytest.mark.parametrize("content, expect", [
    ("mechanism: selection\nseedz: 3\n", "seedz: unknown key; allowed keys: mechanism, rows, seeds"),
    ("mechanism: pruning\n", "mechanism: Input should be 'selection', 'recovery', 'entropy' or 'schedule'"),
    ("mechanism: recovery\nrows: [zero, mean]\n", "including the paper's 'learned'"),
    ("mechanism: entropy\nrows: [context, huffman]\n", "distinct rows of entropy (context, cell, channel, raw)"),
    ("mechanism: schedule\nseeds: 1\n", "seeds: Input should be greater than or equal to 2"),
    ("- a list\n", "top level must be a mapping"),
])
def test_bad_ablation_file_exits_2_with_one_line(tmp_path, capsys, content, expect):
    path = tmp_path / "ablate_bad.yaml"
    path.write_text(content)
    _one_line(capsys, ["ablate", str(path), "--out", str(tmp_path / "out")], expect)
    assert not (tmp_path / "out").exists()


def test_unknown_ablation_run_folder_and_config_value_exit_2(tmp_path, capsys):
    _one_line(capsys, ["ablate", "pruning"], "unknown ablation 'pruning': use one of entropy, recovery, schedule, "
                                              "selection")
    _one_line(capsys, ["ablate", "entropy", "--run", str(tmp_path)], "is not a run folder with a trained backbone")
    _one_line(capsys, ["ablate", "entropy", "--set", "codecs.lr=-1"], "codecs.lr: Input should be greater than 0")
    assert not any(tmp_path.iterdir())


def test_every_shipped_ablation_loads_with_the_paper_first():
    for name, paper in (("selection", "cbam"), ("recovery", "learned"), ("entropy", "context"), ("schedule", "staged")):
        loaded, cfg = load_ablation(name)
        assert loaded == name and cfg.rows[0] == paper == cfg.paper and cfg.seeds >= 2
    assert AblationConfig(mechanism="recovery", rows=["zero", "learned"]).rows == ["learned", "zero"]
    overrides = AblationConfig(mechanism="schedule", kept_channels=2, codecs={"schedule": {"joint": 0.5}}).overrides()
    assert "codecs.schedule.joint=0.5" in overrides and 'codecs.aecnn.kept_channels=[2]' in overrides


def test_ci95_is_student_t_and_differences_are_paired():
    e = estimate([1.0, 2.0, 3.0])
    assert e.mean == 2.0 and e.ci95 == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    # seeds move both rows alike: the paired difference is exact although each row is noisy
    d = paired_difference([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    assert d.mean == pytest.approx(0.5) and d.ci95 == pytest.approx(0.0) and d.significant
    assert not estimate([-1.0, 1.0, 0.5]).significant


def _trials(rows: dict[str, list[float]], size: float = 50.0) -> list[Trial]:
    return [Trial(r, i, a, size) for r, accs in rows.items() for i, a in enumerate(accs)]


def test_table_states_sign_size_and_where_the_paper_does_not_win(tmp_path):
    abl = AblationConfig(mechanism="selection", rows=["cbam", "random", "l1", "se"])
    rows = build_table(abl, _trials({"cbam": [0.80, 0.82, 0.81], "random": [0.70, 0.71, 0.72],
                                     "l1": [0.85, 0.87, 0.86], "se": [0.81, 0.81, 0.82]}))
    verdict = {r.row: r.verdict for r in rows}
    assert verdict["cbam"] == "paper's mechanism (reference)"
    assert verdict["random"].startswith("the paper's mechanism wins (-10.00 ± ")
    assert verdict["l1"].startswith("l1 beats the paper's mechanism by +5.00 ± ")
    assert "the paper's mechanism does not win" in verdict["se"]
    table = markdown(abl, "selection", rows)
    assert table.count("\n| ") == 5 and "| random | 71.00 ± 2.48 |" in table
    assert plot(abl, "selection", rows, tmp_path / "a.png").stat().st_size > 1000
    # entropy rows are judged by bytes (fewer is better)
    ent = AblationConfig(mechanism="entropy", rows=["context", "channel", "raw"])
    trials = [Trial(r, i, 0.8, b + i) for r, b in (("context", 40), ("channel", 45), ("raw", 64)) for i in range(3)]
    assert build_table(ent, trials)[2].verdict == "the paper's mechanism wins (+24.00 ± 0.00 B)"


def test_training_free_rankings_pick_what_they_say(split_data):
    tail, z, y = split_data
    z = z.clone()
    z[:, 5] *= 10  # the loudest and most varying channel
    cfg = CodecsConfig()

    def importance(method: str, z, seed: int = 0, c: CodecsConfig = cfg) -> np.ndarray:
        return channel_importance(method, tail, {"train_z": z, "train_y": y}, c, seed, 4)

    for method in ("l1", "variance"):
        assert int(np.argmax(importance(method, z))) == 5
    # the sweep hands the ablation its split tensors as a SplitArray (shards), not one tensor
    shards = SplitArray(None, [len(z)], tuple(z.shape[1:]), data=z)
    torch.testing.assert_close(torch.from_numpy(importance("l1", shards)), z.double().abs().mean(dim=(0, 2, 3)))
    torch.testing.assert_close(torch.from_numpy(importance("variance", shards)),
                               z.double().transpose(0, 1).reshape(64, -1).var(dim=1))
    r0, r1 = (importance("random", z, s) for s in (0, 1))
    assert not np.array_equal(np.argsort(r0), np.argsort(r1))
    assert np.array_equal(r0, importance("random", z, 0))
    se = importance("se", z, c=cfg.model_copy(update={"schedule": cfg.schedule}))
    assert se.shape == (64,) and np.all((se > 0) & (se < 1))
    assert seeds_of(_cfg(), 3) == seeds_of(_cfg(), 3) and len(set(seeds_of(_cfg(), 3))) == 3


def _cfg(*overrides: str):
    from grl_aecnn.config import load_config

    return load_config("tiny", list(overrides))


def test_fill_recovery_and_raw_packing_round_trip(split_data):
    tail, z, y = split_data
    channels = (1, 4, 9)
    codec = AECNNCodec((64, 8, 8), channels, bits=2, recovery="mean", entropy_coded=False)
    assert list(codec.parameters()) == []
    cfg = CodecsConfig(batch_size=16, schedule={"feature": 1.0, "codec": 1.0, "joint": 0.5}, tail_finetune="first")
    logged = []
    trained = train_codec(codec, tail, z, y, cfg, 0, lambda name, m: logged.append(name))
    assert logged == ["joint"] and trained  # the weightless codec skips the steps with nothing to train
    means = z.mean(dim=(0, 2, 3))
    sample = z[0].numpy()
    data = codec.encode(sample)
    kept = codec.decode(data)
    assert len(data) <= 3 * 8 * 8 * 2 // 8 + 24  # fixed-length payload: k*H*W*b bits, plus the header
    assert np.allclose(kept, codec.dequantized(sample))
    restored = codec.restore(torch.from_numpy(kept)[None])[0]
    pruned = [c for c in range(64) if c not in channels]
    assert torch.allclose(restored[pruned], means[pruned, None, None].expand(-1, 8, 8))
    spec = {"codec": "aecnn", "id": "x", "kept_channels": 3, "bits": 2, "channels": list(channels), "width": 8,
            "scales": "calibrated", "clip_percentile": 99.5, "grid": 8, "recovery": "mean", "entropy_coded": False}
    again, _ = load_codec(save_codec(codec, spec, (64, 8, 8), tail, trained), tail)
    assert again.decode(data).shape == (3, 8, 8) and torch.equal(again.recovery.fill, codec.recovery.fill)
    assert torch.allclose(AECNNCodec((64, 8, 8), channels, 2, recovery="zero").restore(torch.ones(1, 3, 8, 8))[0, 0],
                          torch.zeros(8, 8))


def test_entropy_ablation_end_to_end_on_digits(ray_local, tiny_config, tmp_path):
    """Two seeds, one trained codec each, sent three ways: equal accuracy, fewer bytes with ANS."""
    from data_pipelines.datasets import load_splits
    from grl_aecnn import tracking
    from grl_aecnn.ablate.experiment import run_ablation
    from grl_aecnn.config import load_config

    abl = AblationConfig(mechanism="entropy", seeds=2, kept_channels=2, bits=2)
    cfg = load_config("quick", [f"output_dir={tiny_config.output_dir}", "name=tiny", "data.dataset=digits",
                                "data.input_size=32", "ray.num_cpus=2", *abl.overrides(),
                                *[f"codecs.{k}={v}" for k, v in {
                                    "train_samples": 64, "val_samples": 16, "test_samples": 32, "batch_size": 32,
                                    "max_concurrent_trials": 2, "measure_workers": 1, "aecnn.decoder_width": 8,
                                    "schedule": json.dumps({"attention": 0.5, "feature": 0.5, "codec": 0.5,
                                                            "joint": 0.5})}.items()]])
    splits = load_splits(cfg.data)
    torch.manual_seed(0)
    model = build_model("resnet18", splits.num_classes).eval()
    meta = {"arch": "resnet18", "num_classes": splits.num_classes, "dataset": "digits", "input_size": 32}
    tracking.setup(cfg)
    trials = run_ablation(abl, cfg, model, meta, splits, tmp_path / "abl", resume=False)
    got = {(t.row, t.seed_index): t for t in trials}
    assert sorted(got) == [(r, i) for r in ("cell", "channel", "context", "raw") for i in (0, 1)]
    for i in (0, 1):
        assert len({got[r, i].accuracy for r in ("context", "cell", "channel", "raw")}) == 1
        assert got["context", i].payload_bytes < got["raw", i].payload_bytes
    # raw: exactly k*H*W*b bits of payload per sample, every sample the same size
    assert got["raw", 0].payload_bytes == got["raw", 1].payload_bytes
    assert len(list((tmp_path / "abl" / "tune").glob("*"))) >= 2  # a Tune experiment, one trial per seed


def test_trial_specs_change_only_the_ablated_mechanism(split_data):
    from grl_aecnn.ablate.experiment import trial_specs
    from grl_aecnn.codecs.sweep import SweepInputs

    tail, z, y = split_data
    model = build_model("resnet18", 10)
    tensors = {"train_z": z, "train_y": y}
    inputs = SweepInputs("resnet18", 10, "digits", 32, "stem", model.state_dict(), tensors, None)
    def specs(**kw):
        abl = AblationConfig(seeds=2, kept_channels=3, **kw)
        return {trial_id(s): s for s in trial_specs(abl, _cfg(*abl.overrides(), "codecs.batch_size=16"), inputs)}

    cfg = _cfg()

    recovery = specs(mechanism="recovery", rows=["learned", "mean"])
    assert sorted(recovery) == ["learned", "learned-seed1", "mean", "mean-seed1"]
    assert recovery["mean-seed1"]["recovery"] == "mean" and recovery["mean-seed1"]["seed"] == 1
    # every row draws the same training seeds, index by index (paired rows)
    assert trial_seeds(cfg.seed, recovery["mean-seed1"]) == trial_seeds(cfg.seed, recovery["learned-seed1"])
    assert trial_seeds(cfg.seed, recovery["mean"]) != trial_seeds(cfg.seed, recovery["mean-seed1"])
    # same seed: same CBAM ranking, so the rows differ only in recovery
    assert recovery["mean"]["channels"] == recovery["learned"]["channels"]
    assert len(recovery["mean"]["channels"]) == 3
    # a fill has no decoder to train: the tail passes of the codec step adapt the tail instead
    assert "codecs" not in recovery["learned"]
    assert recovery["mean"]["codecs"]["schedule"]["joint"] == cfg.codecs.schedule.codec + cfg.codecs.schedule.joint
    schedule = specs(mechanism="schedule")
    s = cfg.codecs.schedule
    assert schedule["end_to_end"]["codecs"]["schedule"] == {"attention": s.attention, "feature": 0.0,
                                                             "codec": 0.0, "joint": s.codec + s.joint}
    assert "codecs" not in schedule["staged"]
    assert sorted(specs(mechanism="entropy")) == ["context", "context-seed1"]  # one trained codec per seed
    selection = specs(mechanism="selection", rows=["cbam", "l1", "random"])
    assert selection["l1"]["channels"] == selection["l1-seed1"]["channels"]  # training-free and deterministic
    assert selection["random"]["channels"] != selection["random-seed1"]["channels"]
