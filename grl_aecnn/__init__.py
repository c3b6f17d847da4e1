"""grl-aecnn: semantic compression and graph-RL offloading of CNN inference in MEC."""

from grl_aecnn.runtime import configure_process

__version__ = "0.1.0"

# Before anything imports Ray: a stage function or script used as a library gets the same
# loopback-only, quiet defaults as the CLI (runtime.py imports neither Ray nor torch).
configure_process()
