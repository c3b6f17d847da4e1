"""grl-aecnn: semantic compression and graph-RL offloading of CNN inference in MEC."""

__version__ = "0.1.0"
