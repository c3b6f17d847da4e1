"""PPO for the GRL policies on the MEC simulator, run by Ray Tune.

One Tune experiment trains every requested policy (one trial per codec set, as many at once
as the CPUs allow), so checkpoints, fault tolerance and MLflow all come from one place:

- sampling: ``num_env_runners`` runners (0 = inside the trial's process), each stepping
  ``num_envs_per_env_runner`` simulator copies as one vectorised env (`vector_env.py`);
- checkpoints every ``checkpoint_frequency`` iterations and at the end, signed when written
  (`grl_aecnn.trust`: RLlib checkpoints are pickles) and loaded only after verification;
- resume: Tune's own experiment state (pickles, and written later than the checkpoints) is
  never restored. Each policy continues from its newest verified checkpoint on disk, whatever
  Tune had recorded, so a kill loses at most the iterations since that checkpoint; failed env
  runners are restarted by RLlib and failed trials retried by Tune (``max_failures``);
- MLflow: one child run per policy under the active (stage) run with every iteration's
  reward, accuracy, success rate, throughput, env steps/s and learner losses; a resumed
  policy logs to the same run (its id is kept in ``mlflow_runs.json``). The final exported policy is
  logged to the active run by the caller.
"""

from __future__ import annotations

import json
import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from tqdm.auto import tqdm

from ray import tune
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.algorithms.ppo import PPOConfig as RLlibPPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.tune.registry import register_env

from grl_aecnn import trust
from grl_aecnn.storage import local_checkpoint, push, ray_storage_path, remove
from grl_aecnn.config import ExperimentConfig
from grl_aecnn.profile import CodecProfile
from grl_aecnn.progress import LogLines
from grl_aecnn.rl.finetune import load_initial_weights
from grl_aecnn.rl.learner import DeviceCreditPPOLearner
from grl_aecnn.rl.policy import MODULES, export_policy
from grl_aecnn.rl.settings import PPOConfig
from grl_aecnn.rl.vector_env import make_vector_env
from grl_aecnn.sim.env import episode_metrics
from grl_aecnn.tracking import RUNS_FILE, child_run_tags, record_run, recorded_run, tracking_uri

ENV_NAME = "grl_aecnn_mec"
EXPERIMENT = "ppo"
PROGRESS_FILE = "progress.json"  # in each signed checkpoint: policy, iteration, config hash, metrics
KEPT = "checkpoints"  # <out>/checkpoints/<policy>/<iteration>: the newest checkpoint kept across attempts
# Per-episode means of the simulator's per-slot info, logged by `MECEpisodeMetrics`.
EPISODE_METRICS = ("accuracy", "success_rate", "throughput")
# What each iteration logs to MLflow: name -> path in the RLlib result.
LOGGED = {
    "episode_return_mean": ("env_runners", "episode_return_mean"),
    "accuracy": ("env_runners", "accuracy"),
    "success_rate": ("env_runners", "success_rate"),
    "throughput": ("env_runners", "throughput"),
    "env_steps_sampled": ("env_runners", "num_env_steps_sampled"),
    "policy_loss": ("learners", "default_policy", "policy_loss"),
    "vf_loss": ("learners", "default_policy", "vf_loss"),
    "entropy": ("learners", "default_policy", "entropy"),
    "mean_kl": ("learners", "default_policy", "mean_kl_loss"),
    "vf_explained_var": ("learners", "default_policy", "vf_explained_var"),
    "sample_time_s": ("timers", "env_runner_sampling_timer"),
    "learn_time_s": ("timers", "learner_update_timer"),
    "iteration_time_s": ("time_this_iter_s",),
}


class TrainingInterrupted(KeyboardInterrupt):
    """Tune stopped early (Ctrl-C / SIGUSR1); the last checkpoints are kept for ``resume=True``."""


@dataclass(frozen=True)
class PolicyRun:
    """One GRL policy to train: its name in ``policies.json`` and the codecs it may use."""

    name: str
    codecs: tuple[str, ...]


@dataclass(frozen=True)
class TrainedPolicy:
    name: str
    codecs: tuple[str, ...]
    path: Path  # exported policy folder (see grl_aecnn.rl.policy)
    checkpoint: Path  # last RLlib checkpoint of the trial
    iterations: int
    metrics: dict[str, float]
    nodes: tuple[str, ...] = ()  # Ray node ids its env runners sampled on


class MECEpisodeMetrics(RLlibCallback):
    """Episode accuracy, success rate and throughput from the env's per-slot ``info``."""

    def on_episode_end(self, *, episode, env_runner=None, metrics_logger=None, **kwargs) -> None:
        infos = [info for info in episode.get_infos() if "tasks" in info]  # the reset info is empty
        slot_s = env_runner.config.env_config["scenario"]["slot_s"]
        values = episode_metrics(infos, slot_s)
        window = env_runner.config.metrics_num_episodes_for_smoothing
        for key in EPISODE_METRICS:
            metrics_logger.log_value(key, values[key], reduce="mean", window=window)


def _dig(result: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float, np.number)) else None


def iteration_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The curated per-iteration metrics of an RLlib result (absent ones left out)."""
    out = {name: value for name, path in LOGGED.items() if (value := _dig(result, path)) is not None}
    if out.get("env_steps_sampled") and out.get("sample_time_s"):
        out["env_steps_per_s"] = out["env_steps_sampled"] / out["sample_time_s"]
    return out


class TrialLogger(tune.Callback):
    """Driver-side progress (a bar on a terminal, else log lines) and one MLflow child run per
    policy, nested under the run active in the driver when ``fit`` starts. With ``resume``, a
    policy goes on logging to the run recorded in ``runs_file`` by its interrupted attempt.

    Tune pickles its callbacks with the experiment, so the client and the bar are made in
    ``setup``.
    """

    def __init__(self, uri: str, experiment: str, iterations: int, num_trials: int, location: str,
                 runs_file: Path, resume: bool) -> None:
        self.uri, self.experiment = uri, experiment
        self.iterations, self.num_trials = iterations, num_trials
        self.location, self.runs_file, self.resume = location, runs_file, resume
        self._runtime: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runtime": {}}

    def setup(self, **info) -> None:
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
        bar = tqdm(total=self.iterations * self.num_trials, desc="PPO iterations", unit="it", disable=None)
        self._runtime = {"client": client, "experiment_id": experiment_id, "runs": {}, "bar": bar,
                         "tags": child_run_tags(self.location), "lines": LogLines() if bar.disable else None}

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        rt = self._runtime
        name = _trial_name(trial)
        run_id = rt["runs"].get(trial.trial_id) or (recorded_run(rt["client"], self.runs_file, name)
                                                    if self.resume else None)
        if run_id is None:  # a new policy; a resumed one goes on logging to the run it started
            run_id = rt["client"].create_run(rt["experiment_id"], run_name=f"ppo/{name}",
                                             tags={**rt["tags"], "grl_aecnn.policy": name}).info.run_id
            record_run(self.runs_file, name, run_id)
        else:
            rt["client"].update_run(run_id, status="RUNNING")
        rt["runs"][trial.trial_id] = run_id
        print(f"[ppo] {name}: training (MLflow run {run_id})")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        rt = self._runtime
        step = int(result["training_iteration"])
        metrics = iteration_metrics(result)
        timestamp = int(result.get("timestamp", 0) * 1000)
        rt["client"].log_batch(rt["runs"][trial.trial_id],
                               metrics=[Metric(k, v, timestamp, step) for k, v in metrics.items()])
        figures = (f"{_trial_name(trial)} it {step} return {metrics.get('episode_return_mean', float('nan')):.1f} "
                   f"success {metrics.get('success_rate', float('nan')):.2f}")
        rt["bar"].update(1)
        rt["bar"].set_postfix_str(figures)
        if rt["lines"] is not None:
            rt["lines"](f"[ppo] {figures} ({step}/{self.iterations})", final=step >= self.iterations)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._end(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info) -> None:
        self._runtime["bar"].close()
        for trial in trials:  # interrupted trials: close their runs too
            self._end(trial, "KILLED")

    def _end(self, trial, status: str) -> None:
        run_id = self._runtime["runs"].pop(trial.trial_id, None)
        if run_id is not None:
            self._runtime["client"].set_terminated(run_id, status)


class SignedPPO(PPO):
    """PPO whose checkpoints are signed when saved and verified before they are loaded.

    ``resume_from`` (policy name -> checkpoint folder) starts a trial from a checkpoint of an
    earlier attempt, iteration count included; Tune's own retries after a failure come through
    ``load_checkpoint`` and are verified the same way.
    """

    def setup(self, config, key: bytes = b"", config_hash: str = "",
              resume_from: dict[str, str] | None = None) -> None:
        self._trust = (key, config_hash)
        self._nodes: set[str] = set()
        super().setup(config)
        start = (resume_from or {}).get(self.config.env_config["policy"])
        if start:
            self.load_checkpoint(start)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        super().save_checkpoint(checkpoint_dir)
        key, config_hash = self._trust
        self._nodes.update(self._runner_nodes())
        progress = {"policy": self.config.env_config["policy"], "iteration": self.iteration,
                    "config_hash": config_hash, "metrics": iteration_metrics(self._last_result or {}),
                    "env_runner_nodes": sorted(self._nodes)}
        (Path(checkpoint_dir) / PROGRESS_FILE).write_text(json.dumps(progress))
        trust.sign(Path(checkpoint_dir), key)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        with trust.verified_copy(Path(checkpoint_dir), self._trust[0]) as safe:
            super().load_checkpoint(str(safe))
        self._nodes.update((_progress(Path(checkpoint_dir)) or {}).get("env_runner_nodes", []))

    def _runner_nodes(self) -> list[str]:
        """The Ray node ids of the live env runners (this trial's own node when it samples itself)."""
        import ray

        def node(_runner: Any) -> str:
            return ray.get_runtime_context().get_node_id()

        group = self.env_runner_group
        if group is None or group.num_remote_env_runners() == 0:
            return [node(None)]
        return group.foreach_env_runner(node, local_env_runner=False, timeout_seconds=30)


def _progress(folder: Path) -> dict[str, Any] | None:
    """A checkpoint's progress record (plain JSON), None when missing or malformed."""
    try:
        progress = json.loads((folder / PROGRESS_FILE).read_text())
        return progress if isinstance(progress, dict) and isinstance(progress.get("iteration"), int) else None
    except (OSError, ValueError):
        return None


def newest_checkpoints(out_dir: Path, names: list[str], config_hash: str, key: bytes) -> dict[str, Path]:
    """For each policy, its newest checkpoint that verifies and was trained with this config.

    It is looked for in the last attempt's Tune folder and among the kept ones, then kept as
    ``<out>/checkpoints/<policy>/<iteration>`` (copied before anything older is deleted, so a
    kill at any moment loses nothing). A checkpoint that does not verify is named and skipped.
    """
    found: dict[str, Path] = {}
    for name in names:
        folders = [*(out_dir / "tune" / EXPERIMENT / name).glob("checkpoint_*"), *(out_dir / KEPT / name).glob("[0-9]*")]
        ranked = sorted(((p, f) for f in folders if (p := _progress(f)) and p.get("policy") == name
                         and p.get("config_hash") == config_hash), key=lambda pf: -pf[0]["iteration"])
        for progress, folder in ranked:
            kept = out_dir / KEPT / name / f"{progress['iteration']:06d}"
            try:
                if folder != kept:
                    trust.copy_signed(folder, kept, key)
                trust.verify(kept, key)
            except trust.Untrusted as err:
                print(f"[ppo] ignoring checkpoint {err}")
                continue
            found[name] = kept
            for older in (out_dir / KEPT / name).iterdir():
                if older != kept:
                    shutil.rmtree(older, ignore_errors=True)
            break
    return found


def module_spec(ppo: PPOConfig) -> RLModuleSpec:
    return RLModuleSpec(module_class=MODULES[ppo.model],
                        model_config={"hidden": ppo.hidden, "gcn_layers": ppo.gcn_layers,
                                      "mlp_layers": ppo.mlp_layers})


def env_config(cfg: ExperimentConfig, profile: CodecProfile, run: PolicyRun) -> dict[str, Any]:
    """Plain data an env runner anywhere in the cluster builds its simulators from.

    The profile travels inline (a few KB), so runners need no shared filesystem. Seeds come
    from RLlib (``config.seed`` + runner index) at the first reset.
    """
    scenario = cfg.scenario.model_copy(update={"codecs": list(run.codecs)})
    return {"policy": run.name, "scenario": scenario.model_dump(mode="json"),
            "profile": profile.model_dump(mode="json"), "codecs": list(run.codecs), "seed": None,
            "train_scenarios": cfg.policy.train_scenarios.model_dump(mode="json"), "credit": cfg.policy.ppo.credit}


def rllib_config(cfg: ExperimentConfig, env: dict[str, Any] | Any) -> RLlibPPOConfig:
    """RLlib's PPO config from ``policy.ppo``; ``env`` may be a Tune grid over env configs.

    ``credit="device"`` or ``"difference"`` swaps in ``DeviceCreditPPOLearner`` (it adds the
    per-device reward column to its learner connector itself); ``"slot"`` is RLlib's own PPO learner.
    """
    ppo = cfg.policy.ppo
    config = (
        RLlibPPOConfig()
        .environment(ENV_NAME, env_config=env)
        .env_runners(num_env_runners=ppo.num_env_runners, num_envs_per_env_runner=ppo.num_envs_per_env_runner,
                     gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT)
        .learners(num_learners=0, num_cpus_per_learner=ppo.cpus_per_trial,
                  learner_class=None if ppo.credit == "slot" else DeviceCreditPPOLearner)
        .resources(num_cpus_for_main_process=ppo.cpus_per_trial)
        .training(lr=ppo.lr, gamma=ppo.gamma, lambda_=ppo.gae_lambda, train_batch_size_per_learner=ppo.train_batch_size,
                  minibatch_size=ppo.minibatch_size, num_epochs=ppo.num_epochs, clip_param=ppo.clip_param,
                  entropy_coeff=ppo.entropy_coeff, vf_loss_coeff=ppo.vf_loss_coeff, grad_clip=ppo.grad_clip)
        .rl_module(rl_module_spec=module_spec(ppo))
        .callbacks(MECEpisodeMetrics)
        .fault_tolerance(restart_failed_env_runners=ppo.restart_failed_env_runners,
                         max_num_env_runner_restarts=ppo.max_env_runner_restarts)
        .debugging(seed=cfg.seed)
    )
    if ppo.init_from:  # fine-tuning (grl_aecnn.rl.finetune)
        config.callbacks(on_algorithm_init=functools.partial(load_initial_weights, ppo.init_from))
    return config


def _trial_name(trial) -> str:
    return trial.config["env_config"]["policy"]


def train_ppo(cfg: ExperimentConfig, profile: CodecProfile, runs: list[PolicyRun], out_dir: Path,
              resume: bool) -> dict[str, TrainedPolicy]:
    """Train ``runs`` (one Tune trial each) and export each final policy to ``out_dir/<name>``.

    ``resume``: each policy continues from its newest verified checkpoint trained with the same
    config (see ``newest_checkpoints``); otherwise (or when ``False``) it starts over. Raises
    ``TrainingInterrupted`` when Tune was stopped before every trial reached
    ``policy.ppo.iterations``.
    """
    ppo = cfg.policy.ppo
    storage = (out_dir / "tune").resolve()
    if not resume:  # the store's copy of earlier checkpoints goes too
        remove(cfg, out_dir / KEPT)
    config_hash = cfg.stage_hash("policies") + ":" + ",".join(f"{r.name}={'+'.join(r.codecs)}" for r in runs)
    key = trust.load_key()
    register_env(ENV_NAME, make_vector_env)
    if not resume:
        shutil.rmtree(out_dir / KEPT, ignore_errors=True)
    start_from = newest_checkpoints(out_dir, [r.name for r in runs], config_hash, key)
    push(cfg, out_dir / KEPT)  # the kept checkpoints reach the store before Tune's folder goes
    # Tune's experiment folder of an earlier attempt is never restored: its state is pickles.
    shutil.rmtree(storage, ignore_errors=True)
    remove(cfg, storage)
    storage.mkdir(parents=True)
    progress = {name: _progress(folder) for name, folder in start_from.items()}
    for name, p in progress.items():
        print(f"[ppo] {name}: resuming after iteration {p['iteration']} from {start_from[name]}")
    pending = [run for run in runs if run.name not in progress or progress[run.name]["iteration"] < ppo.iterations]

    finished: dict[str, tuple[Path, int, dict[str, float]]] = {
        run.name: (start_from[run.name], progress[run.name]["iteration"], progress[run.name]["metrics"])
        for run in runs if run not in pending}
    if pending:
        envs = [env_config(cfg, profile, run) for run in pending]
        logger = TrialLogger(tracking_uri(cfg), cfg.tracking.experiment, ppo.iterations, len(pending),
                             cfg.run_location, out_dir / RUNS_FILE, resume)
        trainable = tune.with_parameters(SignedPPO, key=key, config_hash=config_hash,
                                         resume_from={name: str(path) for name, path in start_from.items()})
        tuner = tune.Tuner(
            trainable,
            param_space=rllib_config(cfg, tune.grid_search(envs)),
            tune_config=tune.TuneConfig(max_concurrent_trials=ppo.max_concurrent_trials or None,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=ray_storage_path(cfg, storage),
                stop={"training_iteration": ppo.iterations},
                checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=ppo.checkpoint_frequency,
                                                        checkpoint_at_end=True, num_to_keep=2),
                failure_config=tune.FailureConfig(max_failures=ppo.max_failures),
                callbacks=[logger],
                verbose=0,
            ),
        )
        grid = tuner.fit()
        if grid.errors:
            raise RuntimeError(f"PPO training failed: {grid.errors[0]}")
        for result in grid:
            name = result.config["env_config"]["policy"]
            done = int(result.metrics.get("training_iteration", 0))
            if done < ppo.iterations or result.checkpoint is None:
                raise TrainingInterrupted(f"PPO stopped at iteration {done} of {ppo.iterations} for {name}; "
                                          "run again with resume to continue from the last checkpoint")
            finished[name] = (local_checkpoint(cfg, result.checkpoint), done, iteration_metrics(result.metrics))

    trained: dict[str, TrainedPolicy] = {}
    for run in runs:
        checkpoint, done, metrics = finished[run.name]
        meta = {"name": run.name, "codecs": list(run.codecs), "iterations": done, "checkpoint": str(checkpoint),
                "critic": cfg.policy.critic.model_dump(mode="json"),
                "trained_on": {"num_devices": cfg.scenario.num_devices, "num_servers": cfg.scenario.num_servers,
                               "train_scenarios": cfg.policy.train_scenarios.model_dump(mode="json")}}
        with trust.verified_copy(checkpoint, key) as safe:
            path = export_policy(safe, out_dir / run.name, meta)
        nodes = tuple((_progress(checkpoint) or {}).get("env_runner_nodes", []))
        trained[run.name] = TrainedPolicy(run.name, run.codecs, path, checkpoint, done, metrics, nodes)
    return trained


def log_policies(trained: dict[str, TrainedPolicy]) -> None:
    """Final metrics and the exported policies on the active MLflow run."""
    for policy in trained.values():
        mlflow.log_metrics({f"{policy.name}/{k}": v for k, v in policy.metrics.items()})
        mlflow.log_artifacts(str(policy.path), artifact_path=f"policies/{policy.name}")
