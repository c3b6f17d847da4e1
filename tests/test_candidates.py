"""The GRL policies' model-based critic: candidates from the actor's logits, expected-reward choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from grl_aecnn.evaluation.harness import actor_name, default_specs
from grl_aecnn.evaluation.settings import EvaluationConfig
from grl_aecnn.policies.base import bind_policy
from grl_aecnn.policies.candidates import (IMPROVEMENT, CandidateCritic, critic_from_meta, draw_table, expected_rewards,
                                           hill_climb, least_confident, order_preserving, realisations, sampled,
                                           single_changes, to_local)
from grl_aecnn.policies.registry import PolicySpec
from grl_aecnn.policies.settings import ACTOR_ONLY, CriticConfig
from grl_aecnn.profile import load_profile
from grl_aecnn.sim.core import sample_realisations
from grl_aecnn.sim.env import MECEnv
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = load_profile(Path(__file__).parent / "fixtures" / "profile_small.json")
CONGESTED = dict(num_devices=12, num_servers=2, max_devices=16, max_servers=2, episode_slots=10,
                 bandwidth_hz=0.2e6, deadline_max_s=0.05)
EXACT = ScenarioConfig(**CONGESTED, channel_est_error_db=0.0, capacity_est_noise=0.0, capacity_lag_slots=0)
NOISY = ScenarioConfig(**CONGESTED, channel_est_error_db=4.0, capacity_est_noise=0.1, capacity_lag_slots=2)


def random_logits(env: MECEnv, obs: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    return np.where(obs["action_mask"] > 0, rng.normal(0, 2, obs["action_mask"].shape), -3.4e38).astype(np.float32)


def reference_candidates(logits: np.ndarray, mask: np.ndarray, k: int, choices: int) -> tuple[np.ndarray, ...]:
    """The candidate generators written with NumPy sorts, as the module docstring states them."""
    scores = np.where(mask > 0, logits, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    first, second = order[:, 0], order[:, 1]
    has_choice = np.isfinite(scores[np.arange(len(scores)), second])
    margin = np.where(has_choice, scores[np.arange(len(scores)), first] - scores[np.arange(len(scores)), second], np.inf)
    unsure = np.argsort(margin, kind="stable")[: min(k, int(has_choice.sum()))]
    flips = [first.copy()]
    for device in unsure:
        flips.append(flips[-1].copy())
        flips[-1][device] = second[device]
    offloading = np.flatnonzero(first > 0)
    cut = offloading[np.argsort(scores[offloading, first[offloading]] - scores[offloading, 0], kind="stable")][:k]
    cuts = [np.where(np.isin(np.arange(len(first)), cut[: i + 1]), 0, first) for i in range(cut.size)]
    local = [(j, 0) for j in range(len(mask)) if mask[j, 0] > 0 and (mask[j] > 0).sum() > 1]
    offload = scores.copy()
    offload[:, 0] = -np.inf
    moves = local + [(j, a) for j in unsure for a in np.argsort(-offload[j], kind="stable")[:choices]
                     if np.isfinite(offload[j, a])]
    return (np.array(flips), np.array(cuts).reshape(-1, len(first)), unsure,
            np.array([m[0] for m in moves], dtype=np.int64), np.array([m[1] for m in moves], dtype=np.int64))


@pytest.mark.parametrize("seed", range(6))
def test_compiled_candidates_equal_their_numpy_statement(seed: int) -> None:
    """Ties (the earliest action and device first), masked actions and local-only devices included."""
    rng = np.random.default_rng(seed)
    env = MECEnv(NOISY, PROFILE, ["aecnn"], seed=seed)
    obs, _ = env.reset(seed=seed)
    mask = obs["action_mask"]
    logits = np.where(mask > 0, rng.integers(-2, 3, mask.shape), -3.4e38).astype(np.float32)  # many ties
    for k, choices in ((1, 1), (3, 2), (8, 3)):
        flips, cuts, unsure, device, action = reference_candidates(logits, mask, k, choices)
        np.testing.assert_array_equal(order_preserving(logits, mask, k + 1), flips)
        np.testing.assert_array_equal(to_local(logits, mask, k), cuts)
        np.testing.assert_array_equal(least_confident(logits, mask, k), unsure)
        got_device, got_action = single_changes(logits, mask, choices, unsure)
        np.testing.assert_array_equal(got_device, device)
        np.testing.assert_array_equal(got_action, action)


@pytest.mark.parametrize("seed", range(4))
def test_polish_moves_equal_full_rescoring(seed: int) -> None:
    """The compiled polish (one sort per draw, each change moving its task within it) makes the
    changes that rescoring every changed decision with `expected_rewards` makes."""
    env = MECEnv(NOISY, PROFILE, ["aecnn"], seed=seed)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    logits, mask, n = random_logits(env, obs, rng), obs["action_mask"], NOISY.num_devices
    table = draw_table(NOISY, env.points, sample_realisations(NOISY, env.estimated_state(), 8, rng))
    device, action = single_changes(logits, mask, 3, least_confident(logits, mask, 6))
    start = order_preserving(logits, mask, 1)[0]
    choice, value = start.copy(), float(expected_rewards(table, start[None, :n])[0])
    for _ in range(5):
        cands = np.repeat(choice[None], device.size, axis=0)
        cands[np.arange(device.size), device] = action
        scores = np.where(choice[device] != action, expected_rewards(table, cands[:, :n]), -np.inf)
        if scores.max() <= value + IMPROVEMENT:
            break
        choice, value = cands[int(np.argmax(scores))], float(scores.max())
    got, moves = hill_climb(table, start, float(expected_rewards(table, start[None, :n])[0]), (device, action), 5)
    assert moves > 0
    np.testing.assert_allclose(expected_rewards(table, got[None, :n]), value, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got, choice)


def test_sampled_candidates_stay_in_the_mask_and_follow_the_softmax() -> None:
    rng = np.random.default_rng(0)
    mask = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=np.float32)
    logits = np.array([[0.0, np.log(3.0), -np.inf], [5.0, 9.0, 9.0], [0.0, 0.0, 9.0]])
    draws = sampled(logits, mask, 4000, rng)
    assert np.all(np.take_along_axis(mask[None].repeat(4000, 0), draws[..., None], -1) == 1)
    assert np.all(draws[:, 1] == 0) and set(np.unique(draws[:, 2])) == {0, 1}
    assert abs(np.mean(draws[:, 0] == 1) - 0.75) < 0.03  # softmax of (0, log 3) = (1/4, 3/4)


def test_cut_backs_run_the_least_convincing_offloads_locally_first() -> None:
    mask = np.ones((4, 3), dtype=np.float32)
    mask[3, 1:] = 0  # device 3 may only run locally
    logits = np.array([[0.0, 5.0, 1.0], [0.0, 0.5, 0.1], [3.0, 0.0, 0.0], [0.0, 9.0, 9.0]])
    cands = to_local(logits, mask, 5)
    # Offloading by argmax: devices 0 (margin 5.0) and 1 (0.5); device 1 goes local first.
    assert cands.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    assert to_local(logits, mask, 1).tolist() == [[1, 0, 0, 0]] and to_local(logits, mask, 0).shape == (0, 4)


@pytest.mark.parametrize("seed", range(4))
def test_with_exact_estimates_the_critic_is_never_worse_than_the_argmax(seed: int) -> None:
    """Error-free estimates are the realised slot, so the candidate the critic keeps earns at least the
    actor's argmax (candidate 0) in every slot, and more in some (the slots are congested)."""
    rng = np.random.default_rng(seed)
    env = MECEnv(EXACT, PROFILE, ["aecnn"], seed=seed)
    critic = CandidateCritic(CriticConfig(order_preserving=6, sampled=6, samples=4), seed=seed)
    obs, _ = env.reset(seed=seed)
    gains = []
    for _ in range(EXACT.episode_slots):
        logits = random_logits(env, obs, rng)
        argmax = np.where(obs["action_mask"] > 0, logits, -np.inf).argmax(-1)
        chosen = env.check_action(critic.choose(logits, obs["action_mask"], EXACT, env.points, env.estimated_state()))
        rewards = env.evaluate(env.realised_state(), np.stack([argmax, chosen]))
        gains.append(rewards[1] - rewards[0])
        obs, *_ = env.step(chosen)
    assert min(gains) >= -1e-9 and max(gains) > 0


def test_the_critic_maximises_the_sampled_expected_reward() -> None:
    """Under estimate errors the kept candidate has the highest mean reward over the critic's own draws."""
    env = MECEnv(NOISY, PROFILE, ["aecnn"], seed=1)
    obs, _ = env.reset(seed=1)
    logits = random_logits(env, obs, np.random.default_rng(1))
    cr = CriticConfig(order_preserving=5, to_local=3, sampled=5, samples=16, polish=0)
    mask = obs["action_mask"]
    chosen = CandidateCritic(cr, seed=9).choose(logits, mask, NOISY, env.points, env.estimated_state())
    rng = np.random.default_rng(9)  # the critic's generator: its sampled candidates, then its draws
    cands = np.concatenate([order_preserving(logits, mask, 5), to_local(logits, mask, 3), sampled(logits, mask, 5, rng)])
    draws = sample_realisations(NOISY, env.estimated_state(), 16, rng)
    scores = expected_rewards(draw_table(NOISY, env.points, draws), cands[:, :NOISY.num_devices])
    np.testing.assert_array_equal(chosen, cands[int(np.argmax(scores))])
    est = env.estimated_state()
    assert realisations(EXACT, est, 16, rng) is est and realisations(NOISY, est, 16, rng).task.shape[0] == 16


@pytest.mark.parametrize("seed", range(3))
def test_polish_only_raises_the_sampled_expected_reward(seed: int) -> None:
    """Each polish round is one single-device change (any device to local, or one of the least
    confident devices to one of its top offloads), kept only if it raises the mean reward over
    the same draws the candidates were scored on."""
    env = MECEnv(NOISY, PROFILE, ["aecnn"], seed=seed)
    obs, _ = env.reset(seed=seed)
    logits, mask, est = random_logits(env, obs, np.random.default_rng(seed)), obs["action_mask"], env.estimated_state()
    base = CriticConfig(order_preserving=4, to_local=2, sampled=4, samples=8, polish=0)
    picks = [CandidateCritic(base.model_copy(update={"polish": rounds}), seed=seed)
             .choose(logits, mask, NOISY, env.points, est) for rounds in (0, 1, 3)]
    rng = np.random.default_rng(seed)
    sampled(logits, mask, 4, rng)  # the critic's generator: its sampled candidates first, then its draws
    draws = sample_realisations(NOISY, est, 8, rng)
    values = expected_rewards(draw_table(NOISY, env.points, draws), np.stack(picks)[:, :NOISY.num_devices])
    assert values[0] <= values[1] + 1e-9 <= values[2] + 2e-9
    changed = np.flatnonzero(picks[1] != picks[0])
    assert changed.size == 1 and values[1] > values[0]  # random logits leave room: one device changes
    assert picks[1][changed[0]] == 0 or changed[0] in least_confident(logits, mask, base.polish_devices)
    env.check_action(picks[2])


def test_actor_only_is_the_argmax_and_meta_without_a_critic_means_actor_only() -> None:
    env = MECEnv(NOISY, PROFILE, ["aecnn"], seed=2)
    obs, _ = env.reset(seed=2)
    logits = random_logits(env, obs, np.random.default_rng(2))
    choice = CandidateCritic(ACTOR_ONLY).choose(logits, obs["action_mask"], NOISY, env.points, env.estimated_state())
    np.testing.assert_array_equal(choice, np.where(obs["action_mask"] > 0, logits, -np.inf).argmax(-1))
    assert critic_from_meta(None) == ACTOR_ONLY and not ACTOR_ONLY.active
    assert critic_from_meta({"order_preserving": 3}).order_preserving == 3


def test_bound_policy_uses_its_recorded_critic(tmp_path: Path) -> None:
    """An exported policy with a critic record plays the critic's pick once bound; unbound (or with the
    critic overridden off) it plays its argmax; a bad critic record is named, not obeyed."""
    from safetensors.torch import save_file

    from grl_aecnn.rl.policy import MODULES, RLlibPolicy, load_rllib_policy, make_policy

    env = MECEnv(NOISY, PROFILE, ["aecnn"], seed=3)
    module = MODULES["gcn"](observation_space=env.observation_space, action_space=env.action_space,
                            model_config={"hidden": 8, "gcn_layers": 1}, inference_only=True)
    critic = CriticConfig(order_preserving=8, sampled=8, samples=4)
    policy = RLlibPolicy(module, "p", {}, critic)
    obs, _ = env.reset(seed=3)
    argmax = policy.act(obs)
    bind_policy(policy, env)
    chosen = policy.act(obs)
    expected = CandidateCritic(critic).choose(policy.logits(obs).numpy(), obs["action_mask"], NOISY, env.points,
                                              env.estimated_state())
    np.testing.assert_array_equal(chosen, expected)
    np.testing.assert_array_equal(argmax, policy.logits(obs).argmax(-1).numpy())

    folder = tmp_path / "policy"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "module.safetensors"))
    meta = {"format": 1, "module": "gcn", "model_config": {"hidden": 8, "gcn_layers": 1}, "name": "p",
            "observation_shapes": {k: list(s.shape) for k, s in env.observation_space.spaces.items()},
            "action_nvec": [int(n) for n in env.action_space.nvec], "critic": critic.model_dump()}
    (folder / "policy.json").write_text(json.dumps(meta))
    assert load_rllib_policy(folder).critic.critic == critic
    off = make_policy(PolicySpec("p", "rllib", path=str(folder), params={"critic": ACTOR_ONLY.model_dump()}), env)
    bind_policy(off, env)
    np.testing.assert_array_equal(off.act(obs), argmax)
    (folder / "policy.json").write_text(json.dumps({**meta, "critic": {"samples": 0}}))
    with pytest.raises(ValueError, match=r"policy.json: critic.samples: Input should be greater"):
        load_rllib_policy(folder)


def test_evaluation_runs_the_subjects_actor_alone_beside_it() -> None:
    trained = [PolicySpec("grl-aecnn", "rllib", codecs=["aecnn"], path="x"),
               PolicySpec("grl-deepjscc", "rllib", codecs=["deepjscc"], path="y")]
    specs = {s.name: s for s in default_specs(PROFILE, NOISY, EvaluationConfig(), trained)}
    actor = specs[actor_name("grl-aecnn")]
    assert actor.path == "x" and actor.params["critic"] == ACTOR_ONLY.model_dump()
    assert actor_name("grl-deepjscc") not in specs and "critic" not in specs["grl-aecnn"].params


def test_polish_may_move_any_device_to_local_but_offloads_only_the_least_confident() -> None:
    env = MECEnv(NOISY, PROFILE, ["aecnn"], seed=4)
    obs, _ = env.reset(seed=4)
    logits, mask = random_logits(env, obs, np.random.default_rng(4)), obs["action_mask"]
    unsure = least_confident(logits, mask, 2)
    device, action = single_changes(logits, mask, 2, unsure)
    choosers = np.flatnonzero((mask[:, 0] > 0) & ((mask > 0).sum(axis=1) > 1))
    assert set(device[action == 0]) == set(choosers)
    assert set(device[action > 0]) <= set(unsure) and np.all(mask[device, action] > 0)
