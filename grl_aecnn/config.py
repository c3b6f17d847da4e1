"""Experiment configuration: typed, validated sections loaded from YAML.

One `ExperimentConfig` describes a whole pipeline run. Each stage reads only its own
section, so a stage's cache key is the hash of the sections it depends on
(see `ExperimentConfig.stage_hash`). Presets live in `tune_configs/`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from grl_aecnn.backbone.split_points import SPLIT_CHANNELS, split_points
from grl_aecnn.input_files import MAX_BYTES, BadFile, load_yaml, read_text
from grl_aecnn.settings_base import MAX_SEED, Section
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.sim.settings import ScenarioConfig
from grl_aecnn.policies.settings import PolicyConfig
from grl_aecnn.evaluation.settings import EvaluationConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PRESET_DIR = PROJECT_ROOT / "tune_configs"
MAX_ERROR_CHARS = 300  # an error is one readable line, whatever the input (e.g. a huge --set value)
NON_EMPTY = r"^\s*\S"


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and what is allowed."""


class DataConfig(Section):
    dataset: Literal["fashion-mnist", "digits", "caltech101", "imagefolder"] = "fashion-mnist"
    data_dir: str | None = Field(
        None, pattern=NON_EMPTY,
        description="Dataset root (not empty); default depends on the dataset (Debian path for Fashion-MNIST).",
    )
    download: bool = Field(False, description="Allow torchvision to download Caltech-101 (needs internet).")
    input_size: int = Field(32, ge=8, le=512, description="Square input side in pixels after resizing.")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="Share of the training pool held out for validation.")
    test_fraction: float = Field(
        0.2, gt=0.0, lt=0.5, description="Share held out for testing where the dataset has no test set."
    )
    train_subset: int | None = Field(None, ge=1, le=10**9,
                                     description="Use at most this many training images (stratified).")
    val_subset: int | None = Field(None, ge=1, le=10**9,
                                   description="Use at most this many validation images (stratified).")
    test_subset: int | None = Field(None, ge=1, le=10**9, description="Use at most this many test images (stratified).")
    augment: bool = Field(True, description="Random crop (4/32 of the side, padded) and horizontal flip for training.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Split seed, 0 .. 2**32-1.")


class BackboneConfig(Section):
    arch: Literal["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0"] = Field(
        "resnet18", description="torchvision CNN family; codecs.split names one of its split points.")
    pretrained: bool = Field(False, description="Load torchvision ImageNet weights (needs internet).")
    epochs: int = Field(3, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    warmup_fraction: float = Field(
        0.2, ge=0, lt=1, description="One-cycle schedule: share of the steps spent warming up to lr."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    num_workers: int = Field(1, ge=1, le=4096, description="Ray Train data-parallel workers.")
    use_gpu: bool = False
    cpus_per_worker: int = Field(2, ge=1, le=1024, description="CPUs per worker; also its torch thread count.")
    max_failures: int = Field(0, ge=0, le=1000, description="Ray Train restarts from the last checkpoint after a worker dies.")


class TrackingConfig(Section):
    experiment: str = Field("grl-aecnn", min_length=1, max_length=200, pattern=NON_EMPTY)
    tracking_uri: str | None = Field(
        None, description="MLflow URI; default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db."
    )


class RayConfig(Section):
    address: str | None = Field(None, description="Ray cluster address; default: start a local Ray.")
    num_cpus: int | None = Field(None, ge=1, le=65_536, description="CPUs for a local Ray (default: all).")
    object_store_memory_mb: int | None = Field(1024, ge=100, le=10**8)


class ExperimentConfig(Section):
    name: str = Field("quick", max_length=100, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$",
                      description="Run folder name: letters, digits, '.', '_', '-' (no '/', no '..').")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Master seed, 0 .. 2**32-1.")
    output_dir: str = Field("outputs", pattern=NON_EMPTY,
                            description="Root folder (not empty) or object-store URI (s3://bucket/prefix, gs://...); "
                                        "the run writes to <output_dir>/<name>/.")
    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    codecs: CodecsConfig = CodecsConfig()
    scenario: ScenarioConfig = ScenarioConfig()
    policy: PolicyConfig = PolicyConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _checks_across_sections(self) -> "ExperimentConfig":
        """What is knowable before training: a folder name inside output_dir, kept channels the
        split has, a sweep file that exists."""
        if ".." in self.name:
            raise ValueError(f"name: {self.name!r} must not contain '..' (it names a folder inside output_dir)")
        arch, split = self.backbone.arch, self.codecs.split
        if split not in split_points(arch):
            raise ValueError(f"codecs.split: {split!r} is not a split point of {arch} "
                             f"(allowed: {', '.join(split_points(arch))})")
        channels = SPLIT_CHANNELS[arch][split]
        too_many = [k for k in self.codecs.aecnn.kept_channels if k > channels]
        if too_many:
            raise ValueError(f"codecs.aecnn.kept_channels: {too_many} exceed the {channels} channels of {arch} "
                             f"at split {split!r} (allowed: 1..{channels})")
        sweep_path(self.evaluation.sweep)
        return self

    @model_validator(mode="after")
    def _train_scenarios_fit(self) -> "ExperimentConfig":
        from grl_aecnn.sim.scenarios import check_distribution

        if not self.policy.train_scenarios.empty:
            check_distribution(self.scenario, self.policy.train_scenarios)
        return self

    # -- derived locations -------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """The local run folder: ``<output_dir>/<name>``, or its mirror when output_dir is a store URI."""
        from grl_aecnn.storage import is_uri, mirror_root

        root = mirror_root(self.output_dir) if is_uri(self.output_dir) else Path(self.output_dir)
        if not root.is_absolute():
            root = Path.cwd() / root
        return root / self.name

    @property
    def run_location(self) -> str:
        """Where the run lives, as users name it: the store URI, else the absolute local folder."""
        from grl_aecnn.storage import is_uri, join

        return join(self.output_dir, self.name) if is_uri(self.output_dir) else str(self.run_dir.resolve())

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    # Which sections each stage's output depends on: a stage is reused only if these match.
    STAGE_INPUTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "backbone": ("seed", "data", "backbone"),
        "codecs": ("seed", "data", "backbone", "codecs"),
        "policies": ("seed", "data", "backbone", "codecs", "scenario", "policy"),
        "evaluation": ("seed", "data", "backbone", "codecs", "scenario", "policy", "evaluation"),
    }

    def stage_hash(self, stage: str) -> str:
        """Hash of the config sections a stage depends on (its cache key)."""
        dump = self.model_dump(mode="json")
        keys = self.STAGE_INPUTS[stage]
        blob = json.dumps({k: dump[k] for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """The resolved config as dotted keys, for MLflow params."""
        return _flatten(self.model_dump(mode="json"))


ExperimentConfig.model_rebuild()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def preset_names() -> list[str]:
    """Experiment presets (sweep files `scenarios_*` and ablations `ablate_*` live in the same folder
    but are not configs)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if not p.stem.startswith(("_", "scenarios_", "ablate_")))


def resolve_config_path(name_or_path: str) -> Path:
    """A preset name (``quick``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        return path
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if not preset.exists():
        raise ConfigError(
            f"unknown config {name_or_path!r}: use a preset ({', '.join(preset_names())}) or a YAML path"
        )
    return preset


def sweep_path(name_or_path: str) -> Path:
    """A sweep file: a path, else ``tune_configs/<name>.yaml``; ConfigError when neither is a file."""
    for path in (Path(name_or_path), PRESET_DIR / f"{name_or_path}.yaml"):
        if path.is_file():
            return path
    raise ConfigError(f"evaluation.sweep: {name_or_path!r} is not a sweep file (a path, or a name in {PRESET_DIR}: "
                      f"{', '.join(sorted(p.stem for p in PRESET_DIR.glob('scenarios_*.yaml')))})")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` with the value read as YAML (numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set backbone.epochs=2")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except BadFile as err:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({err})") from None
    return key, value


def _format_validation_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        parent = first["loc"][:-1]
        allowed = _allowed_keys(parent)
        msg = f"unknown key; allowed keys here: {', '.join(allowed)}"
    elif first["type"] == "string_pattern_mismatch":
        field = _field_at(first["loc"])
        msg = f"{_short_repr(first['input'])} is not allowed: {field.description if field else msg}"
    elif "input" in first and first["type"] not in ("missing", "value_error"):
        msg = f"{msg} (got {_short_repr(first['input'])})"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{extra}" if loc else f"{msg}{extra}"


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message as one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def _field_at(loc: tuple[Any, ...]) -> Any:
    """The pydantic FieldInfo at a validation-error location, or None (e.g. inside a list)."""
    model: Any = ExperimentConfig
    field = None
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = field.annotation
    return field


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model = _field_at(loc).annotation if loc else ExperimentConfig
    if not isinstance(model, type) or not issubclass(model, BaseModel):
        return []
    return sorted(model.model_fields)


def load_config(name_or_path: str = "quick", overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a preset or YAML file, apply ``--set`` overrides, validate; raise ConfigError on any fault."""
    path = resolve_config_path(name_or_path)
    try:
        tree = load_yaml(read_text(path, "config file", MAX_BYTES)) or {}
    except BadFile as err:
        raise ConfigError(one_line(err if str(err).startswith("config file") else f"{path}: {err}")) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(one_line(_format_validation_error(err))) from None


def dump_config(cfg: ExperimentConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
