"""PPO for the GRL policies on the MEC simulator, run by Ray Tune.

One Tune experiment trains every requested policy (one trial per codec set, as many at once
as the CPUs allow), so checkpoints, fault tolerance, resume and MLflow all come from one
place:

- sampling: ``num_env_runners`` runners (0 = inside the trial's process), each stepping
  ``num_envs_per_env_runner`` simulator copies as one vectorised env (`vector_env.py`);
- checkpoints every ``checkpoint_frequency`` iterations and at the end; an interrupted run
  (Ctrl-C, SIGUSR1, a killed driver) continues with ``resume=True`` from the last checkpoint,
  and the iteration count continues; failed env runners are restarted by RLlib and failed
  trials retried by Tune (``max_failures``) from their last checkpoint;
- MLflow: one child run per policy under the active (stage) run with every iteration's
  reward, accuracy, success rate, throughput, env steps/s and learner losses; the final
  exported policy is logged to the active run by the caller.
"""

from __future__ import annotations

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

from grl_aecnn.config import ExperimentConfig
from grl_aecnn.profile import CodecProfile
from grl_aecnn.rl.finetune import load_initial_weights
from grl_aecnn.rl.learner import DeviceCreditPPOLearner
from grl_aecnn.rl.policy import MODULES, export_policy
from grl_aecnn.rl.settings import PPOConfig
from grl_aecnn.rl.vector_env import make_vector_env
from grl_aecnn.sim.env import episode_metrics
from grl_aecnn.tracking import child_run_tags, tracking_uri

ENV_NAME = "grl_aecnn_mec"
EXPERIMENT = "ppo"
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
    """Driver-side progress bar and one MLflow child run per trial.

    Tune pickles its callbacks with the experiment and unpickles them on restore, so the
    MLflow client, run ids and the bar are made in ``setup`` (each ``fit``), and the parent
    run is whatever run is active in the driver then: a resumed run nests under the new
    stage run.
    """

    def __init__(self, uri: str, experiment: str, iterations: int, num_trials: int) -> None:
        self.uri, self.experiment = uri, experiment
        self.iterations, self.num_trials = iterations, num_trials
        self._runtime: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_runtime": {}}

    def setup(self, **info) -> None:
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name(self.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
        bar = tqdm(total=self.iterations * self.num_trials, desc="PPO iterations", unit="it", disable=None)
        self._runtime = {"client": client, "experiment_id": experiment_id, "runs": {}, "bar": bar,
                         "tags": child_run_tags()}

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        rt = self._runtime
        name = trial.config["env_config"]["policy"]
        run = rt["client"].create_run(rt["experiment_id"], run_name=f"ppo/{name}",
                                      tags={**rt["tags"], "grl_aecnn.policy": name, "grl_aecnn.trial": trial.trial_id})
        rt["runs"][trial.trial_id] = run.info.run_id
        print(f"[ppo] {name}: training ({trial.trial_id})")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        rt = self._runtime
        step = int(result["training_iteration"])
        metrics = iteration_metrics(result)
        timestamp = int(result.get("timestamp", 0) * 1000)
        rt["client"].log_batch(rt["runs"][trial.trial_id],
                               metrics=[Metric(k, v, timestamp, step) for k, v in metrics.items()])
        bar = rt["bar"]
        bar.update(1)
        bar.set_postfix_str(f"{trial.config['env_config']['policy']} it {step} "
                            f"return {metrics.get('episode_return_mean', float('nan')):.1f} "
                            f"success {metrics.get('success_rate', float('nan')):.2f}")

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
            "train_scenarios": cfg.policy.train_scenarios.model_dump(mode="json")}


def rllib_config(cfg: ExperimentConfig, env: dict[str, Any] | Any) -> RLlibPPOConfig:
    """RLlib's PPO config from ``policy.ppo``; ``env`` may be a Tune grid over env configs.

    ``credit="device"`` swaps in ``DeviceCreditPPOLearner`` (it adds the per-device reward
    column to its learner connector itself); ``"slot"`` is RLlib's own PPO learner.
    """
    ppo = cfg.policy.ppo
    config = (
        RLlibPPOConfig()
        .environment(ENV_NAME, env_config=env)
        .env_runners(num_env_runners=ppo.num_env_runners, num_envs_per_env_runner=ppo.num_envs_per_env_runner,
                     gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT)
        .learners(num_learners=0, learner_class=DeviceCreditPPOLearner if ppo.credit == "device" else None)
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

    ``resume``: continue the experiment in ``out_dir/tune`` if it was started with the same
    config; otherwise (or when ``False``) start over. Raises ``TrainingInterrupted`` when Tune
    was stopped before every trial reached ``policy.ppo.iterations``.
    """
    ppo = cfg.policy.ppo
    storage = (out_dir / "tune").resolve()
    marker = storage / f"{EXPERIMENT}.config_hash"
    config_hash = cfg.stage_hash("policies") + ":" + ",".join(f"{r.name}={'+'.join(r.codecs)}" for r in runs)
    register_env(ENV_NAME, make_vector_env)

    envs = [env_config(cfg, profile, run) for run in runs]
    param_space = rllib_config(cfg, tune.grid_search(envs))
    restorable = (resume and tune.Tuner.can_restore(str(storage / EXPERIMENT)) and marker.exists()
                  and marker.read_text() == config_hash)
    if restorable:
        print(f"[ppo] resuming {storage / EXPERIMENT} from its last checkpoints")
        tuner = tune.Tuner.restore(str(storage / EXPERIMENT), trainable=PPO, resume_unfinished=True,
                                   resume_errored=True, param_space=param_space)
    else:
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True)
        marker.write_text(config_hash)
        logger = TrialLogger(tracking_uri(cfg), cfg.tracking.experiment, ppo.iterations, len(runs))
        tuner = tune.Tuner(
            PPO,
            param_space=param_space,
            tune_config=tune.TuneConfig(max_concurrent_trials=ppo.max_concurrent_trials or None,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=EXPERIMENT,
                storage_path=str(storage),
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

    trained: dict[str, TrainedPolicy] = {}
    by_name = {run.name: run for run in runs}
    for result in grid:
        name = result.config["env_config"]["policy"]
        done = int(result.metrics.get("training_iteration", 0))
        if done < ppo.iterations or result.checkpoint is None:
            raise TrainingInterrupted(f"PPO stopped at iteration {done} of {ppo.iterations} for {name}; "
                                      "run again with resume to continue from the last checkpoint")
        run = by_name[name]
        checkpoint = Path(result.checkpoint.path)
        meta = {"name": name, "codecs": list(run.codecs), "iterations": done,
                "trained_on": {"num_devices": cfg.scenario.num_devices, "num_servers": cfg.scenario.num_servers,
                               "train_scenarios": cfg.policy.train_scenarios.model_dump(mode="json")}}
        path = export_policy(checkpoint, out_dir / name, meta)
        trained[name] = TrainedPolicy(name, run.codecs, path, checkpoint, done, iteration_metrics(result.metrics))
    return trained


def log_policies(trained: dict[str, TrainedPolicy]) -> None:
    """Final metrics and the exported policies on the active MLflow run."""
    for policy in trained.values():
        mlflow.log_metrics({f"{policy.name}/{k}": v for k, v in policy.metrics.items()})
        mlflow.log_artifacts(str(policy.path), artifact_path=f"policies/{policy.name}")
