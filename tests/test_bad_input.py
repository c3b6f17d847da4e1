"""Bad input through the real command line: every bad config value and every bad file gives one
line naming what is wrong, exit 2 (bad input), and creates nothing (no output folder, no MLflow
store, no stage folder)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from grl_aecnn import pipeline
from grl_aecnn.cli import EXIT_CONFIG, main
from grl_aecnn.evaluation import harness
from grl_aecnn.config import MAX_ERROR_CHARS

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"
GOOD = json.loads(PROFILE.read_text())


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Run `grl-aecnn ARGS --set output_dir=<tmp>/out` in <tmp>/cwd; return (exit code, stderr lines)
    after checking that nothing appeared under tmp (no output folder, no mlruns, no MLflow db)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")

    def accepted(*_: Any, **__: Any) -> None:  # a tripwire: bad input must never reach a run
        raise AssertionError("the bad input was accepted and the pipeline started")

    monkeypatch.setattr(pipeline, "run_pipeline", accepted)
    monkeypatch.setattr(harness, "evaluate", accepted)

    def run(*args: str) -> tuple[int, list[str]]:
        before = _tree(tmp_path)
        command, rest = args[0], list(args[1:])
        code = main([command, "--set", f"output_dir={tmp_path / 'out'}", *rest])
        lines = capsys.readouterr().err.strip().splitlines()
        assert _tree(tmp_path) == before, "the command created files before rejecting its input"
        return code, lines

    return run


def _assert_one_line(code: int, lines: list[str], expect: str) -> None:
    assert code == EXIT_CONFIG, lines
    assert len(lines) == 1, lines
    assert len(lines[0]) <= MAX_ERROR_CHARS + 40, lines[0]
    assert expect in lines[0], lines[0]


# -- bad config values (as --set overrides of the quick preset) --------------------------------------

BAD_OVERRIDES = [
    # infinite / NaN floats, in plain fields and lists
    ("backbone.lr=.inf", "backbone.lr: Input should be a finite number"),
    ("backbone.lr=.nan", "backbone.lr: Input should be a finite number"),
    ("scenario.penalty=.inf", "scenario.penalty: Input should be a finite number"),
    ("scenario.slot_s=-.inf", "scenario.slot_s"),
    ("scenario.bandwidth_hz=.nan", "scenario.bandwidth_hz"),
    ("codecs.deepjscc.eval_snr_db=[0.0, .nan]", "codecs.deepjscc.eval_snr_db.1"),
    ("codecs.deepjscc.train_snr_db=.inf", "codecs.deepjscc.train_snr_db"),
    ("codecs.lr=.inf", "codecs.lr"),
    ("policy.ppo.lr=.nan", "policy.ppo.lr"),
    ("policy.ppo.grad_clip=.inf", "policy.ppo.grad_clip"),
    ("codecs.aecnn.attention_sparsity=.inf", "codecs.aecnn.attention_sparsity"),
    # true taken as an integer
    ("backbone.epochs=true", "backbone.epochs: expected an integer, not a boolean"),
    ("seed=true", "seed: expected an integer"),
    ("scenario.num_devices=true", "scenario.num_devices"),
    ("codecs.aecnn.kept_channels=[1, true]", "codecs.aecnn.kept_channels: expected an integer, not a boolean"),
    ("codecs.aecnn.bits=[false]", "codecs.aecnn.bits"),
    ("ray.num_cpus=true", "ray.num_cpus"),
    ("policy.droo.hidden=[true]", "policy.droo.hidden: expected an integer"),
    ("data.train_subset=true", "data.train_subset"),
    # seeds
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    ("seed=4294967296", "seed: Input should be less than or equal to 4294967295"),
    ("data.seed=-5", "data.seed"),
    ("data.seed=100000000000000000000", "data.seed"),
    # absurd sizes
    ("backbone.epochs=100000000000000000000", "backbone.epochs: Input should be less than or equal to 10000"),
    ("scenario.num_devices=1000000000", "scenario.num_devices: Input should be less than or equal to 1024"),
    ("scenario.max_devices=1000000000", "scenario.max_devices"),
    ("scenario.num_servers=100000", "scenario.num_servers"),
    ("backbone.batch_size=10000000", "backbone.batch_size"),
    ("policy.ppo.iterations=10000000000", "policy.ppo.iterations"),
    ("policy.droo.slots=1000000000000", "policy.droo.slots"),
    ("evaluation.episodes=1000000000", "evaluation.episodes"),
    ("scenario.episode_slots=100000000000", "scenario.episode_slots"),
    ("ray.object_store_memory_mb=1000000000000", "ray.object_store_memory_mb"),
    ("codecs.entropy_grid=100000", "codecs.entropy_grid"),
    ("codecs.entropy_context=maybe", "codecs.entropy_context: Input should be a valid boolean"),
    ("codecs.stream_samples=3", "codecs.stream_samples: Input should be greater than or equal to 16"),
    ("policy.ppo.cpus_per_trial=0", "policy.ppo.cpus_per_trial: Input should be greater than 0"),
    # names, folders
    ("name=../escape", "name: '../escape' is not allowed"),
    ("name=a/b", "name: 'a/b' is not allowed"),
    ("name=/abs", "name"),
    ("name=a..b", "name: 'a..b' must not contain '..'"),
    ("name=..", "name"),
    ("name=", "name"),
    ("name=with space", "name"),
    ("output_dir=", "output_dir: '' is not allowed"),
    ("output_dir='   '", "output_dir"),
    ("data.data_dir=''", "data.data_dir: '' is not allowed"),
    ("tracking.experiment=''", "tracking.experiment"),
    # AECNN kept channels and bits
    ("codecs.aecnn.kept_channels=[-3]", "codecs.aecnn.kept_channels.0: Input should be greater than or equal to 1"),
    ("codecs.aecnn.kept_channels=[0]", "codecs.aecnn.kept_channels.0"),
    ("codecs.aecnn.kept_channels=[65]", "[65] exceed the 64 channels of resnet18 at split 'stem'"),
    ("codecs.aecnn.kept_channels=[2, 2]", "codecs.aecnn.kept_channels: repeated entries 2"),
    ("codecs.aecnn.kept_channels=[]", "codecs.aecnn.kept_channels"),
    ("codecs.aecnn.bits=[0]", "codecs.aecnn.bits.0: Input should be greater than or equal to 1"),
    ("codecs.aecnn.bits=[17]", "codecs.aecnn.bits.0: Input should be less than or equal to 16"),
    ("codecs.aecnn.bits=[2, 2]", "codecs.aecnn.bits"),
    # BottleNet++ / DeepJSCC channels
    ("codecs.bottlenetpp.channels=[0]", "codecs.bottlenetpp.channels.0"),
    ("codecs.deepjscc.channels=[0]", "codecs.deepjscc.channels.0"),
    ("codecs.bottlenetpp.channels=[100000]", "codecs.bottlenetpp.channels.0"),
    ("codecs.deepjscc.eval_snr_db=[1000.0, 0.0]", "codecs.deepjscc.eval_snr_db.0"),
    ("codecs.train=[aecnn, aecnn]", "codecs.train"),
    # codec names, sweep file
    ("scenario.codecs=[foo]", "scenario: codecs: ['foo'] must be distinct names"),
    ("scenario.codecs=[aecnn, aecnn]", "scenario: codecs"),
    ("scenario.codecs=[local]", "'local' is always offered"),
    ("evaluation.sweep=no_such_sweep", "evaluation.sweep: 'no_such_sweep' is not a sweep file"),
    ("evaluation.sweep=/nonexistent/sweep.yaml", "evaluation.sweep"),
    # hidden sizes
    ("policy.ppo.hidden=0", "policy.ppo.hidden"),
    ("policy.ppo.hidden=-8", "policy.ppo.hidden"),
    ("policy.droo.hidden=[0]", "policy.droo.hidden.0"),
    ("policy.droo.hidden=[-1, 4]", "policy.droo.hidden.0"),
    ("codecs.aecnn.decoder_width=0", "codecs.aecnn.decoder_width"),
    # wrong types, unknown keys, malformed overrides
    ("backbone.epochs=two", "backbone.epochs"),
    ("backbone.nope=1", "backbone.nope: unknown key; allowed keys here:"),
    ("nope=1", "nope: unknown key"),
    ("backbone.arch=vgg", "backbone.arch"),
    ("scenario.deadline_max_s=10", "deadline_max_s"),
    ("backbone.epochs", "expected key=value"),
    ("backbone.epochs=[1", "not valid YAML"),
    ("=3", "empty key"),
    ("data.input_size=[" + ",".join(["1"] * 5000) + "]", "data.input_size"),
    # scenario distributions the policies would train over
    ("policy.train_scenarios={ranges: {warp: [0, 1]}}", "not drawable"),
    ("policy.train_scenarios={ranges: {bandwidth_hz: [2.0e6, 1.0e6]}}", "exceeds high"),
    ("policy.train_scenarios={choices: {network: [40x2]}}", "exceeds the padding"),
    ("policy.train_scenarios={choices: {network: [big]}}", "NxM"),
    ("policy.train_scenarios={ranges: {deadline_min_s: [0.2, 0.3]}}", "no valid scenario"),
    ("policy.train_scenarios={ranges: {num_devices: [4, 64]}}", "exceeds the padding"),
    ("policy.train_scenarios={choices: {task_prob: []}}", "empty list"),
]


@pytest.mark.parametrize(("override", "expect"), BAD_OVERRIDES, ids=[o[:40] for o, _ in BAD_OVERRIDES])
def test_bad_config_value(cli: Callable[..., tuple[int, list[str]]], override: str, expect: str) -> None:
    code, lines = cli("run", "--set", override)
    _assert_one_line(code, lines, expect)


# -- bad config files ----------------------------------------------------------------------------------

BAD_CONFIG_FILES: list[tuple[str, bytes, str]] = [
    ("utf8", b"name: caf\xe9\n", "not UTF-8 text"),
    ("binary", bytes(range(256)) * 4, "config file"),
    ("nul", b"name: a\0b\n", "NUL"),
    ("duplicate-top", b"name: a\nname: b\n", "line 2: duplicate key 'name'"),
    ("duplicate-nested", b"backbone:\n  epochs: 1\n  epochs: 2\n", "duplicate key 'epochs'"),
    ("alias-bomb", b"a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                   b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
                   b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
                   b"h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n", "aliases expand to more than"),
    ("many-aliases", b"a: &a 1\nb: [" + b",".join([b"*a"] * 100) + b"]\n", "more than 64 aliases"),
    ("alias-in-value", b"x: &a [1, 2]\nbackbone: {epochs: *a}\n", "backbone.epochs"),
    ("deep-nesting", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested deeper"),
    ("deep-mapping", b"".join(b"  " * i + b"k%d:\n" % i for i in range(60)) + b"  " * 60 + b"v: 1\n", "nested deeper"),
    ("too-large", b"# " + b"x" * (300 * 1024) + b"\n", "larger than"),
    ("top-level-list", b"- 1\n- 2\n", "top level must be a mapping"),
    ("top-level-scalar", b"42\n", "top level must be a mapping"),
    ("syntax-tab", b"backbone:\n\tepochs: 1\n", "line 2"),
    ("unclosed", b"backbone: {epochs: 1\n", "config"),
    ("python-tag", b"name: !!python/object/apply:os.system ['echo hi']\n", "could not determine a constructor"),
    ("unhashable-key", b"? [1, 2]\n: 3\n", "config"),
    ("section-scalar", b"backbone: 3\n", "backbone"),
    ("inf-in-file", b"backbone: {lr: .inf}\n", "backbone.lr: Input should be a finite number"),
    ("bool-in-file", b"backbone: {epochs: yes}\n", "backbone.epochs"),
    ("dotdot-name", b"name: ../../etc\n", "name"),
]


@pytest.mark.parametrize(("label", "content", "expect"), BAD_CONFIG_FILES, ids=[c[0] for c in BAD_CONFIG_FILES])
def test_bad_config_file(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path, label: str, content: bytes,
                         expect: str) -> None:
    path = tmp_path / f"{label}.yaml"
    path.write_bytes(content)
    code, lines = cli("run", "--config", str(path))
    _assert_one_line(code, lines, expect)


def test_config_path_that_is_a_folder(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path) -> None:
    folder = tmp_path / "cfg.yaml"
    folder.mkdir()
    _assert_one_line(*cli("run", "--config", str(folder)), "is a folder, expected a file")


def test_missing_config_file(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path) -> None:
    _assert_one_line(*cli("run", "--config", str(tmp_path / "none.yaml")), "config file not found")


# -- bad profiles (evaluate --profile) ---------------------------------------------------------------

def _mutate(change: Callable[[dict[str, Any]], Any]) -> bytes:
    data = copy.deepcopy(GOOD)
    change(data)
    return json.dumps(data).encode()


def _point(index: int, **fields: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda d: d["points"][index].update(fields)


BAD_PROFILES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "not valid JSON"),
    ("not-json", b"{version: 1}", "not valid JSON"),
    ("utf8", b'{"version": 1, "x": "\xff"}', "not UTF-8 text"),
    ("deep-json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("null", b"null", "<root>"),
    ("list", b"[]", "<root>"),
    ("infinity-payload", _mutate(_point(1)).replace(b'"payload_bytes": 16412.0', b'"payload_bytes": Infinity'),
     "Infinity is not allowed"),
    ("nan-flops", _mutate(_point(0)).replace(b'"device_flops": 74033152.0', b'"device_flops": NaN', 1),
     "NaN is not allowed"),
    ("neg-infinity", _mutate(_point(1)).replace(b'"encode_ms": 0.02', b'"encode_ms": -Infinity'), "-Infinity"),
    ("huge-float", _mutate(_point(1)).replace(b'"payload_bytes": 16412.0', b'"payload_bytes": 1e400'),
     "finite"),
    ("version-2", _mutate(lambda d: d.update(version=2)), "version: 2 is not supported"),
    ("version-missing", _mutate(lambda d: d.pop("version")), "version"),
    ("version-string", _mutate(lambda d: d.update(version="1")), "version"),
    ("no-local", _mutate(lambda d: d.update(points=d["points"][1:])), "a 'local' point is required"),
    ("no-points", _mutate(lambda d: d.update(points=[])), "points"),
    ("duplicate-ids", _mutate(lambda d: d["points"].append(d["points"][1])), "duplicate ids"),
    ("digital-no-payload", _mutate(lambda d: d["points"][1].pop("payload_bytes")), "payload_bytes is required"),
    ("accuracy-above-1", _mutate(_point(1, accuracy=1.5)), "accuracy"),
    ("accuracy-negative", _mutate(_point(1, accuracy=-0.1)), "accuracy"),
    ("negative-flops", _mutate(_point(1, device_flops=-1.0)), "device_flops"),
    ("negative-payload", _mutate(_point(1, payload_bytes=-3.0)), "payload_bytes"),
    ("unknown-codec", _mutate(_point(1, codec="jpeg")), "codec"),
    ("extra-key", _mutate(_point(1, surprise=1)), "surprise"),
    ("bits-17", _mutate(_point(3, bits=17)), "bits"),
    ("kept-0", _mutate(_point(3, kept_channels=0)), "kept_channels"),
    ("local-server-flops", _mutate(_point(0, server_flops=5.0)), "server_flops=0"),
    ("analog-no-uses", _mutate(lambda d: d["points"].append(
        {"id": "dj", "codec": "deepjscc", "accuracy": 0.5, "device_flops": 1.0, "server_flops": 1.0,
         "accuracy_vs_snr": [{"snr_db": 0, "accuracy": 0.4}, {"snr_db": 5, "accuracy": 0.5}]})),
     "channel_uses is required"),
    ("analog-unsorted-snr", _mutate(lambda d: d["points"].append(
        {"id": "dj", "codec": "deepjscc", "accuracy": 0.5, "device_flops": 1.0, "server_flops": 1.0,
         "channel_uses": 8.0,
         "accuracy_vs_snr": [{"snr_db": 5, "accuracy": 0.4}, {"snr_db": 0, "accuracy": 0.5}]})),
     "sorted by snr_db"),
    ("backbone-missing", _mutate(lambda d: d.pop("backbone")), "backbone"),
    ("one-class", _mutate(lambda d: d["backbone"].update(num_classes=1)), "num_classes"),
    ("split-shape-2d", _mutate(lambda d: d["backbone"].update(split_shape=[64, 8])), "split_shape"),
    ("flops-string", _mutate(lambda d: d["backbone"].update(total_flops="many")), "total_flops"),
    ("clean-accuracy-inf", _mutate(lambda d: d["backbone"].update(clean_accuracy=1.0))
     .replace(b'"clean_accuracy": 1.0', b'"clean_accuracy": Infinity'), "Infinity"),
    ("empty-id", _mutate(_point(1, id="")), "id"),
    ("no-aecnn", _mutate(lambda d: d.update(points=[p for p in d["points"] if p["codec"] != "aecnn"])),
     "codecs ['aecnn'] are not in the profile"),
]


@pytest.mark.parametrize(("label", "content", "expect"), BAD_PROFILES, ids=[p[0] for p in BAD_PROFILES])
def test_bad_profile(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path, label: str, content: bytes,
                     expect: str) -> None:
    path = tmp_path / f"{label}.json"
    path.write_bytes(content)
    _assert_one_line(*cli("evaluate", "--profile", str(path)), expect)


def test_profile_missing_or_a_folder(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path) -> None:
    _assert_one_line(*cli("evaluate", "--profile", str(tmp_path / "none.json")), "not found")
    _assert_one_line(*cli("evaluate", "--profile", str(tmp_path)), "is a folder, expected a file")


# -- bad sweep files and policy indexes (with a good profile) -----------------------------------------

BAD_SWEEPS: list[tuple[str, bytes, str]] = [
    ("sweep-utf8", b"axes: {penalty: [\xff]}\n", "not UTF-8 text"),
    ("sweep-syntax", b"axes: {penalty: [1, 2}\n", "sweep file"),
    ("sweep-unknown-axis", b"axes: {warp_speed: [1, 2]}\n", "are not scenario fields"),
    ("sweep-axes-list", b"axes: [penalty]\n", "expected `axes"),
    ("sweep-values-scalar", b"axes: {penalty: 3}\n", "expected `axes"),
    ("sweep-bad-value", b"axes: {num_devices: [-1]}\n", "num_devices"),
    ("sweep-inf-value", b"axes: {penalty: [.inf]}\n", "finite"),
    ("sweep-duplicate-key", b"axes: {penalty: [1]}\naxes: {penalty: [2]}\n", "duplicate key"),
    ("sweep-combination-list", b"combinations: {hard: [1]}\n", "combinations: {name"),
    ("sweep-combination-bad-value", b"combinations: {hard: {penalty: -1}}\n", "penalty"),
    ("sweep-combination-unknown", b"combinations: {hard: {warp: 1}}\n", "are not scenario fields"),
]


@pytest.mark.parametrize(("label", "content", "expect"), BAD_SWEEPS, ids=[s[0] for s in BAD_SWEEPS])
def test_bad_sweep_file(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path, label: str, content: bytes,
                        expect: str) -> None:
    path = tmp_path / f"{label}.yaml"
    path.write_bytes(content)
    code, lines = cli("evaluate", "--profile", str(PROFILE), "--set", f"evaluation.sweep={path}")
    _assert_one_line(code, lines, expect)


BAD_INDEXES: list[tuple[str, bytes, str]] = [
    ("index-not-json", b"{", "policies index"),
    ("index-list", b"[]", "policies index"),
    ("index-no-kind", b'{"grl": {"path": "x"}}', "policies index"),
    ("index-deep", b"[" * 100_000 + b"]" * 100_000, "policies index"),
]


@pytest.mark.parametrize(("label", "content", "expect"), BAD_INDEXES, ids=[s[0] for s in BAD_INDEXES])
def test_bad_policies_index(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path, label: str,
                            content: bytes, expect: str) -> None:
    path = tmp_path / f"{label}.json"
    path.write_bytes(content)
    _assert_one_line(*cli("evaluate", "--profile", str(PROFILE), "--policies", str(path)), expect)


# -- datasets and checkpoints -------------------------------------------------------------------------

def test_missing_fashion_mnist(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path) -> None:
    empty = tmp_path / "fmnist"
    empty.mkdir()
    _assert_one_line(*cli("run", "--set", f"data.data_dir={empty}"), "train-images-idx3-ubyte(.gz) not found")


def test_dataset_dir_is_a_file(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path) -> None:
    plain = tmp_path / "file"
    plain.write_text("x")
    _assert_one_line(*cli("train-backbone", "--set", f"data.data_dir={plain}"), "not found")


def test_missing_imagefolder_and_caltech(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path) -> None:
    _assert_one_line(*cli("run", "--set", "data.dataset=imagefolder", "--set", f"data.data_dir={tmp_path / 'no'}"),
                     "no ImageFolder tree")
    _assert_one_line(*cli("run", "--set", "data.dataset=caltech101", "--set", f"data.data_dir={tmp_path / 'no'}"),
                     "Caltech-101 not found")


def test_corrupt_idx_file_is_named(tmp_path: Path) -> None:
    from data_pipelines.datasets import DatasetNotFound, _read_idx

    (tmp_path / "t.gz").write_bytes(b"not gzip at all")
    (tmp_path / "u").write_bytes(b"\0\0\x08\x01\0\0\0\x09abc")
    with pytest.raises(DatasetNotFound, match=f"{tmp_path / 't.gz'}"):
        _read_idx(tmp_path, "t")
    with pytest.raises(DatasetNotFound, match="size its header states"):
        _read_idx(tmp_path, "u")


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x08\0\0\0\0\0\0\0{}", b"\xff" * 8 + b"{"])
def test_corrupt_backbone_checkpoint_is_named(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path,
                                              content: bytes) -> None:
    """A finished backbone stage whose weights file is damaged: the next stage refuses to start."""
    from grl_aecnn.config import load_config
    from grl_aecnn.pipeline import MARKER

    cfg = load_config("tiny", [f"output_dir={tmp_path / 'out'}"])
    stage = tmp_path / "out" / "tiny" / "backbone"
    stage.mkdir(parents=True)
    (stage / MARKER).write_text(json.dumps({"hash": cfg.stage_hash("backbone"), "summary": {}}))
    (stage / "model.safetensors").write_bytes(content)
    code, lines = cli("train-codecs", "--config", "tiny")
    _assert_one_line(code, lines, f"{stage / 'model.safetensors'}: not a readable safetensors file")


# -- through a real process ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["run", "--set", "backbone.lr=.inf"],
    ["evaluate", "--profile", "{tmp}/p.json"],
])
def test_subprocess_one_line_exit_2_nothing_created(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "p.json").write_bytes(b'{"version": 1, "payload": Infinity}')
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}",
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    res = subprocess.run([sys.executable, "-m", "grl_aecnn.cli", *[a.format(tmp=tmp_path) for a in args],
                          "--set", f"output_dir={tmp_path / 'out'}"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == EXIT_CONFIG and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def _finished(cfg: Any, stage: str) -> Path:
    from grl_aecnn.pipeline import MARKER

    folder = cfg.run_dir / stage
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"hash": cfg.stage_hash(stage), "summary": {}}))
    return folder


@pytest.mark.parametrize(("label", "content", "expect"), [
    ("profile-infinity", _mutate(_point(1)).replace(b'"payload_bytes": 16412.0', b'"payload_bytes": Infinity'),
     "Infinity is not allowed"),
    ("profile-not-utf8", b"\xff\xfe", "not UTF-8 text"),
    ("profile-no-aecnn", _mutate(lambda d: d.update(points=[p for p in d["points"] if p["codec"] != "aecnn"])),
     "are not in the profile"),
    ("profile-missing", None, "not found"),
])
def test_bad_profile_in_a_finished_codec_stage(cli: Callable[..., tuple[int, list[str]]], tmp_path: Path,
                                               label: str, content: bytes | None, expect: str) -> None:
    """The policies stage reads the codec stage's profile: a damaged one stops the command before it runs."""
    from safetensors.numpy import save_file

    from grl_aecnn.config import load_config

    cfg = load_config("tiny", [f"output_dir={tmp_path / 'out'}"])
    save_file({"w": np.zeros(2, np.float32)}, str(_finished(cfg, "backbone") / "model.safetensors"))
    codecs = _finished(cfg, "codecs")
    if content is not None:
        (codecs / "profile.json").write_bytes(content)
    _assert_one_line(*cli("train-policy", "--config", "tiny"), expect)


@pytest.mark.parametrize("content", [b"\xff", b"[1, 2]", b"[" * 100_000, b"{\"hash\": 3}", None])
def test_damaged_stage_marker_means_not_finished(tmp_path: Path, content: bytes | None) -> None:
    from grl_aecnn.config import load_config
    from grl_aecnn.pipeline import MARKER, finished_summary

    cfg = load_config("tiny", [f"output_dir={tmp_path}"])
    marker = cfg.run_dir / "backbone" / MARKER
    if content is None:
        marker.mkdir(parents=True)  # a folder where the file should be
    else:
        marker.parent.mkdir(parents=True)
        marker.write_bytes(content)
    assert finished_summary(cfg, "backbone") is None
