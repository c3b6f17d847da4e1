"""System model: formulas against hand-computed cases, env API, seeds, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from gymnasium.utils.env_checker import check_env

from grl_aecnn.config import ConfigError, load_config
from grl_aecnn.profile import ProfileError, load_profile
from grl_aecnn.sim import channel
from grl_aecnn.sim.core import SlotState, slot_outcome
from grl_aecnn.sim.env import InvalidActionError, MECEnv
from grl_aecnn.sim.points import point_table
from grl_aecnn.sim.settings import ScenarioConfig

PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"


@pytest.fixture(scope="module")
def profile():
    return load_profile(PROFILE)


def one_slot(gain: float, capacity: float, device_flops: float, deadline: float) -> SlotState:
    return SlotState(gain=np.array([[[gain]]]), capacity=np.array([[capacity]]),
                     device_flops=np.array([[device_flops]]), deadline=np.array([[deadline]]),
                     task=np.array([[True]]), distance=np.array([[[10.0]]]))


def test_path_loss_and_rate_by_hand() -> None:
    sc = ScenarioConfig()
    # DROO: 4.11 * (3e8 / (4 pi 915e6 * 10))^2.8
    expected = 4.11 * (3e8 / (4 * np.pi * 915e6 * 10.0)) ** 2.8
    assert channel.path_gain(sc, np.array(10.0)) == pytest.approx(expected)
    assert channel.snr(sc, np.array(1e-9)) == pytest.approx(0.1 * 1e-9 / 1e-10)  # = 1
    assert channel.spectral_efficiency(np.array(3.0)) == pytest.approx(2.0)


def test_digital_latency_by_hand(profile) -> None:
    sc = ScenarioConfig(num_devices=1, num_servers=1, max_devices=1, max_servers=1)
    pts = point_table(profile, ["aecnn"])
    v = 0
    gain = 3e-9  # SNR = 3 -> 2 bit/s/Hz
    state = one_slot(gain, capacity=10e9, device_flops=1e9, deadline=0.1)
    out = slot_outcome(sc, pts, state, np.array([[1 + v]]))
    t_dev = pts.device_flops[v] / 1e9
    t_tx = pts.bits[v] / (sc.bandwidth_hz * 2.0)
    t_srv = pts.server_flops[v] / 10e9
    # A lone task gets the whole band and server.
    assert out.latency[0, 0] == pytest.approx(t_dev + t_tx + t_srv)
    assert out.on_time[0, 0] and out.reward[0, 0] == pytest.approx(pts.accuracy[v])
    late = slot_outcome(sc, pts, one_slot(gain, 10e9, 1e9, deadline=0.5 * (t_dev + t_tx + t_srv)),
                        np.array([[1 + v]]))
    assert not late.on_time[0, 0] and late.reward[0, 0] == -sc.penalty


def test_local_latency_by_hand(profile) -> None:
    sc = ScenarioConfig(num_devices=1, num_servers=1, max_devices=1, max_servers=1)
    pts = point_table(profile, ["aecnn"])
    out = slot_outcome(sc, pts, one_slot(1e-9, 10e9, 2e9, deadline=0.1), np.array([[0]]))
    assert out.latency[0, 0] == pytest.approx(profile.local_point().device_flops / 2e9)


def test_analog_uses_channel_uses_and_snr_accuracy(profile) -> None:
    sc = ScenarioConfig(num_devices=1, num_servers=1, max_devices=1, max_servers=1, codecs=["deepjscc"])
    pts = point_table(profile, ["deepjscc"])
    point = profile.select(["deepjscc"])[0]
    gain = 10 ** 0.75 * 1e-9  # SNR 7.5 dB: halfway between the 5 and 10 dB table entries
    out = slot_outcome(sc, pts, one_slot(gain, 10e9, 1e9, 0.1), np.array([[1]]))
    t = point.device_flops / 1e9 + point.channel_uses / sc.bandwidth_hz + point.server_flops / 10e9
    assert out.latency[0, 0] == pytest.approx(t)
    table = {s.snr_db: s.accuracy for s in point.accuracy_vs_snr}
    assert out.accuracy[0, 0] == pytest.approx((table[5.0] + table[10.0]) / 2)


def test_check_env_passes(profile) -> None:
    # Every action is allowed when there is no padding and every device has a task.
    sc = ScenarioConfig(num_devices=3, num_servers=2, max_devices=3, max_servers=2, task_prob=1.0,
                        episode_slots=5)
    check_env(MECEnv(sc, profile, seed=0), skip_render_check=True)


def test_env_config_dict_form(profile, tmp_path) -> None:
    import pickle

    cfg = MECEnv.env_config(ScenarioConfig(num_devices=4), PROFILE, codecs=["aecnn"], seed=3)
    env = MECEnv(pickle.loads(pickle.dumps(cfg)))
    obs, _ = env.reset()
    assert obs["device_mask"].sum() == 4 and env.points.num == len(profile.select(["aecnn"]))
    assert MECEnv.from_env_config(cfg).observation_space == env.observation_space


def run_episode(env: MECEnv, seed: int) -> list[dict]:
    obs, _ = env.reset(seed=seed)
    infos = []
    for _ in range(env.scenario.episode_slots):
        action = np.where(obs["action_mask"][:, 1] > 0, 1, 0).astype(np.int64)
        obs, _, _, _, info = env.step(action)
        infos.append(info)
    return infos


def test_same_seed_same_metrics_and_crn_across_codecs(profile) -> None:
    sc = ScenarioConfig(episode_slots=10)
    a = run_episode(MECEnv(sc, profile), seed=7)
    b = run_episode(MECEnv(sc, profile), seed=7)
    assert a == b
    # Common random numbers: the realised episode does not depend on the offered points.
    e1, e2 = MECEnv(sc, profile, codecs=["aecnn"]), MECEnv(sc, profile, codecs=["bottlenetpp", "deepjscc"])
    e1.reset(seed=11)
    e2.reset(seed=11)
    for _ in range(5):
        s1, s2 = e1.realised_state(), e2.realised_state()
        assert np.array_equal(s1.gain, s2.gain) and np.array_equal(s1.task, s2.task)
        e1.step(np.zeros(sc.max_devices, np.int64))
        e2.step(np.zeros(sc.max_devices, np.int64))
    assert run_episode(MECEnv(sc, profile), seed=8) != a


def test_masked_action_rejected(profile) -> None:
    sc = ScenarioConfig(num_devices=2, num_servers=1, max_devices=4, max_servers=2, task_prob=1.0)
    env = MECEnv(sc, profile)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="device 3 is padding"):
        env.step(np.array([0, 0, 0, 1]))
    with pytest.raises(InvalidActionError, match="server 1 does not exist"):
        env.step(np.array([1 + env.points.num, 0, 0, 0]))
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(np.array([0, 0]))


@pytest.mark.parametrize("override, field", [
    ("scenario.bandwidth_hz=-1", "bandwidth_hz"),
    ("scenario.num_devices=40", "num_devices"),
    ("scenario.deadline_min_s=0", "deadline_min_s"),
    ("scenario.deadline_max_s=0.5", "deadline_max_s"),
])
def test_bad_scenario_rejected_naming_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config("quick", [override])


def test_unknown_codec_rejected(profile) -> None:
    with pytest.raises(ValidationError, match="jpeg"):
        ScenarioConfig(codecs=["jpeg"])
    without_bnpp = profile.model_copy(update={"points": [p for p in profile.points if p.codec != "bottlenetpp"]})
    with pytest.raises(ProfileError, match="codecs"):
        MECEnv(ScenarioConfig(codecs=["bottlenetpp"]), without_bnpp)
