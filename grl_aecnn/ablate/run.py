"""`grl-aecnn ablate NAME`: resolve the backbone and config, run the ablation, write and log
its table and plot.

The backbone comes from a run folder (`--run DIR`, whose saved config.yaml is used), the
backbone stage's MLflow run (`--run <run id>`, with `--config`), or is trained by the
`--config` preset's backbone stage (reused when already finished). Everything is checked before
anything is written or trained."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grl_aecnn.ablate.settings import AblationConfig, load_ablation
from grl_aecnn.config import ConfigError, ExperimentConfig, load_config

KEY_FILE = "ablation.json"
TABLE_MD, TABLE_JSON, PLOT = "table.md", "table.json", "ablation.png"
RUN_FILES = ("config.yaml", "backbone/model.safetensors", "backbone/meta.json")


@dataclass
class Plan:
    """A validated ablation request."""

    name: str
    ablation: AblationConfig
    cfg: ExperimentConfig
    run_folder: Path | None  # a local run folder holding the backbone
    run_id: str | None  # or the backbone stage's MLflow run
    out: Path


def plan(name_or_path: str, run: str | None, config: str, overrides: list[str], out: str | None) -> Plan:
    """Check the ablation file, the backbone source and the config (ConfigError, nothing written)."""
    from grl_aecnn.uris import is_reference

    name, abl = load_ablation(name_or_path)
    folder = run_id = None
    if run is not None and not is_reference(run):
        folder = Path(run).resolve()
        missing = [f for f in RUN_FILES if not (folder / f).is_file()]
        if missing:
            raise ConfigError(f"--run: {run} is not a run folder with a trained backbone ({', '.join(missing)} "
                              f"missing); train one with `grl-aecnn train-backbone`")
        config = str(folder / "config.yaml")
        overrides = [f"output_dir={json.dumps(str(folder.parent))}", f"name={folder.name}", *overrides]
    elif run is not None:
        run_id = run
    try:
        cfg = load_config(config, [*overrides, *abl.overrides()])
    except ConfigError as err:
        raise ConfigError(f"ablation {name} on config {config}: {err}") from None
    return Plan(name, abl, cfg, folder, run_id, Path(out).resolve() if out else cfg.run_dir / "ablations" / name)


def _backbone(p: Plan) -> tuple[Any, dict[str, Any]]:
    from grl_aecnn.backbone.io import load_backbone_dir, load_trained_backbone

    if p.run_folder is not None:
        return load_backbone_dir(p.run_folder / "backbone")
    if p.run_id is not None:
        from grl_aecnn.uris import fetch

        return load_backbone_dir(fetch(p.run_id, p.out / "inputs", "--run", "backbone"))
    from grl_aecnn.pipeline import run_pipeline

    run_pipeline(p.cfg, resume=True, stop_after="backbone", only="backbone")
    return load_trained_backbone(p.cfg)


def _key(p: Plan, meta: dict[str, Any]) -> str:
    """What the trials depend on: a folder with another key is not resumed."""
    blob = json.dumps({"ablation": p.ablation.model_dump(mode="json"), "seed": p.cfg.seed, "backbone": meta,
                       "codecs": p.cfg.codecs.model_dump(mode="json"), "data": p.cfg.data.model_dump(mode="json")},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def execute(p: Plan, fresh: bool) -> Path:
    """Run the ablation; the table's Markdown file."""
    from data_pipelines.datasets import load_splits
    from grl_aecnn import tracking
    from grl_aecnn.ablate import report
    from grl_aecnn.ablate.experiment import run_ablation

    tracking.check_reachable(tracking.tracking_uri(p.cfg))
    model, meta = _backbone(p)
    if meta.get("dataset") != p.cfg.data.dataset:
        raise ConfigError(f"--run: the backbone was trained on {meta.get('dataset')!r}, the config's data.dataset "
                          f"is {p.cfg.data.dataset!r}; pass the --config it was trained with")
    p.out.mkdir(parents=True, exist_ok=True)
    key, key_file = _key(p, meta), p.out / KEY_FILE
    resume = not fresh and key_file.is_file() and json.loads(key_file.read_text()).get("key") == key
    key_file.write_text(json.dumps({"key": key, "name": p.name, "ablation": p.ablation.model_dump(mode="json")}))
    mlflow = tracking.setup(p.cfg)
    with mlflow.start_run(run_name=f"{p.cfg.name}/ablate/{p.name}"):
        mlflow.set_tags({"grl_aecnn.stage": "ablation", "grl_aecnn.ablation": p.name,
                         tracking.RUN_DIR_TAG: str(p.cfg.run_dir.resolve())})
        mlflow.log_params({"ablation." + k: str(v) for k, v in p.ablation.model_dump(mode="json").items()})
        trials = run_ablation(p.ablation, p.cfg, model, meta, load_splits(p.cfg.data), p.out, resume)
        rows = report.build_table(p.ablation, trials)
        (p.out / TABLE_MD).write_text(report.markdown(p.ablation, p.name, rows))
        (p.out / TABLE_JSON).write_text(json.dumps({"rows": report.as_records(rows),
                                                    "trials": [asdict(t) for t in trials]}, indent=1))
        report.plot(p.ablation, p.name, rows, p.out / PLOT)
        for f in (TABLE_MD, TABLE_JSON, PLOT):
            mlflow.log_artifact(str(p.out / f), "ablation")
        for r in rows:
            mlflow.log_metrics({f"{r.row}.accuracy": r.accuracy.mean, f"{r.row}.accuracy_ci95": r.accuracy.ci95,
                                f"{r.row}.bytes": r.payload_bytes.mean, f"{r.row}.d_accuracy": r.d_accuracy.mean,
                                f"{r.row}.d_accuracy_ci95": r.d_accuracy.ci95, f"{r.row}.d_bytes": r.d_bytes.mean})
    return p.out / TABLE_MD
