"""RLlib modules of the GRL policies."""

import grl_aecnn  # noqa: F401  (the loopback defaults for Ray, set before these modules import it)
