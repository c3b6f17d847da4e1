"""The one policy interface every evaluated policy answers, learned or not.

`act(obs)` maps one env observation (docs/architecture.md) to an int64 action (N_max,).
A policy that needs the env's own model may also define `bind(env)`; the harness calls it
once per env before the first episode. Through it a policy may read
`env.estimated_state()` (the observation's content in physical units) and `env.evaluate`
(the system model, to score candidates). Only the oracle reads `env.realised_state()`:
that hook is privileged and marks a policy as an upper bound, not a deployable one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from grl_aecnn.sim.env import MECEnv

Observation = dict[str, np.ndarray]


@runtime_checkable
class Policy(Protocol):
    name: str

    def act(self, obs: Observation) -> np.ndarray:
        """Action for one observation: int64 (N_max,), 0 = local, 1 + m V + v = server m, point v."""
        ...


def bind_policy(policy: Policy, env: "MECEnv") -> None:
    """Give a policy that asks for it (`bind`) access to the env's model."""
    bind = getattr(policy, "bind", None)
    if callable(bind):
        bind(env)
