"""The GCN and MLP RLModules on real simulator observations (no Ray cluster needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical

from grl_aecnn.profile import load_profile
from grl_aecnn.sim.core import VecMEC
from grl_aecnn.sim.env import MECEnv, observe
from grl_aecnn.sim.points import point_table
from grl_aecnn.sim.settings import ScenarioConfig
from rllib_models.base import deciding_devices, mask_logits
from rllib_models.distribution import TorchFactoredCategorical
from rllib_models.gcn import GCNOffloadingModule
from rllib_models.mlp import MLPOffloadingModule

PROFILE = load_profile(Path(__file__).parent / "fixtures" / "profile_small.json")
CODECS = ["aecnn"]


def observations(num_devices: int, num_servers: int, max_devices: int, max_servers: int, batch: int = 3,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of real observations; the state does not depend on the padding sizes."""
    sc = ScenarioConfig(num_devices=num_devices, num_servers=num_servers, max_devices=max_devices,
                        max_servers=max_servers)
    core = VecMEC(sc, batch=batch, seed=seed)
    core.reset()
    obs = observe(sc, point_table(PROFILE, CODECS), core.estimated())
    return {key: torch.from_numpy(value) for key, value in obs.items()}


def make_module(cls=GCNOffloadingModule, max_devices: int = 32, max_servers: int = 4, **model_config):
    sc = ScenarioConfig(num_devices=min(14, max_devices), num_servers=min(2, max_servers), max_devices=max_devices,
                        max_servers=max_servers)
    env = MECEnv(sc, PROFILE, CODECS)
    torch.manual_seed(0)
    return cls(observation_space=env.observation_space, action_space=env.action_space,
               model_config={"hidden": 16, **model_config})


def test_padded_graph_gives_the_unpadded_logits_and_value() -> None:
    module = make_module(gcn_layers=3)
    small = observations(6, 2, max_devices=6, max_servers=2)
    padded = observations(6, 2, max_devices=32, max_servers=4)
    v = padded["point"].shape[1]
    with torch.no_grad():
        out_small = module.forward_train({Columns.OBS: small})
        out_padded = module.forward_train({Columns.OBS: padded})
        values_small = module.compute_values({Columns.OBS: small})
        values_padded = module.compute_values({Columns.OBS: padded})
    logits_small = out_small[Columns.ACTION_DIST_INPUTS].view(3, 6, 1 + 2 * v)
    logits_padded = out_padded[Columns.ACTION_DIST_INPUTS].view(3, 32, 1 + 4 * v)
    # Real devices: same local logit and same logits for the 2 real servers.
    torch.testing.assert_close(logits_padded[:, :6, : 1 + 2 * v], logits_small, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values_padded, values_small, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        device_values = module.compute_device_values({Columns.OBS: padded})
    torch.testing.assert_close(device_values[:, :6], module.compute_device_values({Columns.OBS: small}),
                               rtol=1e-5, atol=1e-5)
    # Padded servers and devices: only "local" is possible.
    probs = torch.softmax(logits_padded, -1)
    assert torch.all(probs[:, :6, 1 + 2 * v:] == 0)
    assert torch.all(probs[:, 6:, 0] == 1)


def test_batched_graphs_match_one_at_a_time() -> None:
    """Samples of different network sizes in one batch do not leak into each other."""
    module = make_module()
    parts = [observations(n, m, 32, 4, batch=1, seed=n) for n, m in ((3, 1), (14, 2), (30, 4))]
    batch = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    with torch.no_grad():
        together = module.forward_inference({Columns.OBS: batch})[Columns.ACTION_DIST_INPUTS]
        alone = torch.cat([module.forward_inference({Columns.OBS: p})[Columns.ACTION_DIST_INPUTS] for p in parts])
        values = module.compute_values({Columns.OBS: batch})
        values_alone = torch.cat([module.compute_values({Columns.OBS: p}) for p in parts])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values, values_alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [GCNOffloadingModule, MLPOffloadingModule])
def test_masked_actions_are_never_sampled(cls) -> None:
    module = make_module(cls)
    obs = observations(14, 2, 32, 4, batch=64, seed=1)
    # Also forbid a random half of the offloading actions of real devices.
    generator = torch.Generator().manual_seed(0)
    obs["action_mask"] = obs["action_mask"] * (torch.rand(obs["action_mask"].shape, generator=generator) > 0.5)
    obs["action_mask"][..., 0] = 1.0
    with torch.no_grad():
        logits = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    dist = module.get_exploration_action_dist_cls().from_logits(logits)
    for _ in range(20):
        actions = dist.sample()
        allowed = torch.gather(obs["action_mask"], 2, actions[..., None]).squeeze(-1)
        assert torch.all(allowed == 1)
    greedy = dist.to_deterministic().sample()
    assert torch.all(torch.gather(obs["action_mask"], 2, greedy[..., None]) == 1)


def test_masking_beats_any_logit() -> None:
    """Even huge logits on forbidden actions give them probability exactly 0."""
    logits = torch.full((2, 3, 5), 1e30)
    action_mask = torch.zeros(2, 3, 5)
    action_mask[..., 0] = 1
    action_mask[0, 0, 4] = 1
    device_mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    action_mask[0, 2, 3] = 1  # allowed by the env but the device is padding: still local only
    probs = torch.softmax(mask_logits(logits, action_mask, device_mask).view(2, 3, 5), -1)
    expected = torch.zeros(2, 3, 5)
    expected[..., 0] = 1
    expected[0, 0, [0, 4]] = 0.5
    torch.testing.assert_close(probs, expected)


def test_factored_categorical_equals_rllib_multicategorical() -> None:
    """Same log-probabilities, entropy, KL and greedy action as RLlib's MultiDiscrete default."""
    torch.manual_seed(0)
    nvec = [7] * 5
    logits = mask_logits(torch.randn(4, 5, 7), (torch.rand(4, 5, 7) > 0.4).float(), torch.ones(4, 5))
    other = torch.randn(4, 35)
    ours = TorchFactoredCategorical(logits, num_categories=7)
    ours_other = TorchFactoredCategorical(torch.where(logits > -1e30, other, logits), num_categories=7)
    rllib = TorchMultiCategorical.from_logits(logits, input_lens=nvec)
    rllib_other = TorchMultiCategorical.from_logits(torch.where(logits > -1e30, other, logits), input_lens=nvec)
    actions = ours.sample()
    torch.testing.assert_close(ours.logp(actions), rllib.logp(actions))
    torch.testing.assert_close(ours.entropy(), rllib.entropy())
    torch.testing.assert_close(ours.kl(ours_other), rllib.kl(rllib_other))
    assert torch.equal(ours.to_deterministic().sample(), rllib.to_deterministic().sample())


def test_per_device_terms_are_each_devices_own() -> None:
    """Device n's log-probability, entropy and KL are those of its own categorical; they sum to the joint ones."""
    torch.manual_seed(1)
    logits = mask_logits(torch.randn(4, 5, 7), (torch.rand(4, 5, 7) > 0.4).float(), torch.ones(4, 5))
    other = torch.where(logits > -1e30, torch.randn(4, 35), logits)
    ours, ours_other = (TorchFactoredCategorical(x, num_categories=7) for x in (logits, other))
    rllib, rllib_other = (TorchMultiCategorical.from_logits(x, input_lens=[7] * 5) for x in (logits, other))
    actions = ours.sample()
    logp, entropy, kl = ours.logp_per_device(actions), ours.entropy_per_device(), ours.kl_per_device(ours_other)
    assert logp.shape == entropy.shape == kl.shape == (4, 5)
    for n, (cat, cat_other) in enumerate(zip(rllib._cats, rllib_other._cats)):
        torch.testing.assert_close(logp[:, n], cat.logp(actions[:, n]))
        torch.testing.assert_close(entropy[:, n], cat.entropy())
        torch.testing.assert_close(kl[:, n], cat.kl(cat_other))
    torch.testing.assert_close(logp.sum(-1), ours.logp(actions))
    torch.testing.assert_close(entropy.sum(-1), ours.entropy())
    torch.testing.assert_close(kl.sum(-1), ours.kl(ours_other))


@pytest.mark.parametrize("cls", [GCNOffloadingModule, MLPOffloadingModule])
def test_device_values_sum_to_the_slot_value(cls) -> None:
    """One value per deciding device (exactly 0 for padding and devices without a task); RLlib's
    slot value is their sum, the value of the summed slot reward."""
    module = make_module(cls)
    obs = observations(14, 2, 32, 4, batch=16, seed=2)
    deciding = deciding_devices(obs)
    real = obs["device_mask"] > 0.5
    assert (real & ~deciding).any() and deciding.any()  # the batch has real devices without a task
    with torch.no_grad():
        out = module.forward_train({Columns.OBS: obs})
        device_values = module.compute_device_values({Columns.OBS: obs}, out[Columns.EMBEDDINGS])
        values = module.compute_values({Columns.OBS: obs}, out[Columns.EMBEDDINGS])
    assert device_values.shape == obs["device_mask"].shape
    assert torch.all(device_values[~deciding] == 0) and torch.all(device_values[deciding] != 0)
    assert values.unique().numel() == len(values)  # a value per state, not a constant
    torch.testing.assert_close(values, module.compute_values({Columns.OBS: obs}))  # without precomputed embeddings


def test_gradients_reach_every_gcn_parameter() -> None:
    module = make_module()
    obs = observations(14, 2, 32, 4, batch=8)
    out = module.forward_train({Columns.OBS: obs})
    dist = module.get_train_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    loss = -dist.logp(dist.sample()).mean() + module.compute_values(
        {Columns.OBS: obs}, out[Columns.EMBEDDINGS]).pow(2).mean()
    loss.backward()
    silent = [name for name, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
              or p.grad.abs().sum() == 0]
    assert not silent


def test_module_sizes_do_not_depend_on_network_size() -> None:
    """One GCN serves any N x M up to the padding: its weights are the same for 8x2 and 32x4 spaces."""
    small, large = make_module(max_devices=8, max_servers=2), make_module(max_devices=32, max_servers=4)
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in large.state_dict().items()}
    mlp_small, mlp_large = make_module(MLPOffloadingModule, 8, 2), make_module(MLPOffloadingModule, 32, 4)
    assert sum(p.numel() for p in mlp_small.parameters()) < sum(p.numel() for p in mlp_large.parameters())


def test_mlp_ablation_has_the_same_interface() -> None:
    module = make_module(MLPOffloadingModule)
    obs = observations(14, 2, 32, 4, batch=5)
    out = module.forward_train({Columns.OBS: obs})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (5, int(np.prod(obs["action_mask"].shape[1:])))
    assert module.compute_values({Columns.OBS: obs}, out[Columns.EMBEDDINGS]).shape == (5,)



@pytest.mark.parametrize("cls", [GCNOffloadingModule, MLPOffloadingModule])
def test_acting_module_has_no_critic(cls) -> None:
    """Env runners build the module inference-only: no value head, and a learner's full state loads."""
    learner_module = make_module(cls)
    actor = cls(observation_space=learner_module.observation_space, action_space=learner_module.action_space,
                model_config=learner_module.model_config, inference_only=True)
    assert not hasattr(actor, "value_head") and hasattr(learner_module, "value_head")
    actor.set_state(learner_module.get_state())
    obs = {Columns.OBS: observations(14, 2, 32, 4, batch=4)}
    with torch.no_grad():
        torch.testing.assert_close(actor.forward_inference(obs)[Columns.ACTION_DIST_INPUTS],
                                   learner_module.forward_inference(obs)[Columns.ACTION_DIST_INPUTS])


@pytest.mark.parametrize("seed", range(3))
def test_gine_equals_torch_geometric(seed: int) -> None:
    """The written-out GINE layer is torch-geometric's ``GINEConv(nn, train_eps=True, aggr="mean")``
    on random graphs (isolated nodes and repeated edges included), with the same parameter names."""
    from torch_geometric.nn import GINEConv

    from rllib_models.nets import GINE

    gen = torch.Generator().manual_seed(seed)
    nodes, edges, h = 9, 20, 6
    ours = GINE(h)
    reference = GINEConv(torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.ReLU()), train_eps=True, aggr="mean")
    with torch.no_grad():
        ours.eps.fill_(0.3 * (seed + 1))
    reference.load_state_dict(ours.state_dict())  # strict: same names and shapes
    x = torch.randn(nodes, h, generator=gen)
    edge_index = torch.randint(0, nodes - 2, (2, edges), generator=gen)  # the last two nodes get no message
    edge_attr = torch.randn(edges, h, generator=gen)
    torch.testing.assert_close(ours(x, edge_index, edge_attr), reference(x, edge_index, edge_attr))


def test_module_weights_are_the_shared_nets() -> None:
    """The RLModule adopts the shared network's layers under their own names, so its state dict is
    the inference network's plus ``value_head``, and the two compute the same logits."""
    from rllib_models.nets import GCNNet

    module = make_module()
    obs = observations(14, 2, 32, 4, batch=2)
    net = GCNNet({k: v.shape for k, v in module.observation_space.items()}, module.model_config)
    weights = module.state_dict()
    net.load_state_dict({k: v for k, v in weights.items() if not k.startswith("value_head.")})
    assert {k.split(".")[0] for k in weights} - set(dict(net.named_children())) == {"value_head"}
    with torch.no_grad():
        torch.testing.assert_close(net(obs), module.net.encode(obs)[0])
