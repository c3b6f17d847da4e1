"""Checks of a run's inputs that are knowable before it starts, so a bad input stops the
command before any folder, MLflow run or Ray cluster exists (the config itself is checked
when it loads)."""

from __future__ import annotations

from pathlib import Path

from grl_aecnn.config import ExperimentConfig
from grl_aecnn.input_files import BadFile
from grl_aecnn.pipeline import STAGE_NAMES, finished_summary
from grl_aecnn.profile import ProfileError

DATA_STAGES = ("backbone", "codecs")


def stages_to_run(cfg: ExperimentConfig, resume: bool, stop_after: str | None, only: str | None) -> list[str]:
    """The stages `run_pipeline` will run rather than reuse (the same rule as the pipeline's)."""
    last = STAGE_NAMES.index(stop_after or only or STAGE_NAMES[-1])
    out = []
    for stage in STAGE_NAMES[:last + 1]:
        stage_resume = resume or only != stage
        forced = only == stage and not resume
        if forced or not stage_resume or finished_summary(cfg, stage) is None:
            out.append(stage)
    return out


def check_safetensors(path: Path) -> None:
    """BadFile naming the file unless its header and length are those of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as err:
        raise BadFile(f"{path}: not a readable safetensors file ({err}); run with --fresh to retrain") from None


def check_sweep(cfg: ExperimentConfig) -> None:
    """BadFile naming the sweep file unless every scenario it describes is valid."""
    from grl_aecnn.evaluation.harness import load_sweep, sweep_scenarios

    try:
        sweep_scenarios(cfg.scenario, load_sweep(cfg.evaluation.sweep), cfg.evaluation.slots_per_episode)
    except BadFile:
        raise
    except ValueError as err:  # pydantic's ValidationError included: a value the scenario does not allow
        raise BadFile(f"sweep file {cfg.evaluation.sweep}: {err}") from None


def check_run_inputs(cfg: ExperimentConfig, resume: bool, stop_after: str | None = None,
                     only: str | None = None) -> None:
    """Raise DatasetNotFound or BadFile for inputs the stages about to run would fail on; a run on
    an object store is named by its URI, not by its local mirror."""
    try:
        _check_run_inputs(cfg, resume, stop_after, only)
    except (BadFile, ProfileError) as err:
        raise type(err)(str(err).replace(str(cfg.run_dir), cfg.run_location)) from None


def _check_run_inputs(cfg: ExperimentConfig, resume: bool, stop_after: str | None, only: str | None) -> None:
    todo = stages_to_run(cfg, resume, stop_after, only)
    if any(stage in todo for stage in DATA_STAGES):
        from data_pipelines.datasets import check_available

        check_available(cfg.data)
    if "evaluation" in todo:
        check_sweep(cfg)
    if todo and "backbone" not in todo:
        from grl_aecnn.backbone.io import MODEL_FILE

        check_safetensors(cfg.run_dir / "backbone" / MODEL_FILE)
    if todo and "codecs" not in todo and "backbone" not in todo:
        from grl_aecnn.codecs.sweep import PROFILE_FILE
        from grl_aecnn.profile import load_profile

        load_profile(cfg.run_dir / "codecs" / PROFILE_FILE).select(cfg.scenario.codecs)
