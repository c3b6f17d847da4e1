"""Wireless uplink: geometry, DROO's path loss, Gauss-Markov Rayleigh fading, estimates, rates."""

from __future__ import annotations

import numpy as np

from grl_aecnn.sim.settings import ScenarioConfig

LIGHT_SPEED = 3e8


def server_positions(sc: ScenarioConfig) -> np.ndarray:
    """ES sites (M, 2): on a circle of radius area/4 around the centre (the centre when M = 1)."""
    centre = sc.area_m / 2.0
    if sc.num_servers == 1:
        return np.array([[centre, centre]])
    angle = 2.0 * np.pi * np.arange(sc.num_servers) / sc.num_servers
    return centre + (sc.area_m / 4.0) * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def path_gain(sc: ScenarioConfig, distance_m: np.ndarray) -> np.ndarray:
    """Mean power gain A_d (c / (4 pi f_c d))^d_e (DROO, Huang et al. 2020)."""
    d = np.maximum(distance_m, sc.min_distance_m)
    return sc.antenna_gain * (LIGHT_SPEED / (4.0 * np.pi * sc.carrier_hz * d)) ** sc.pathloss_exponent


def complex_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """CN(0, 1) samples: E|z|^2 = 1."""
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * np.sqrt(0.5)


def fading_step(prev: np.ndarray, innovation: np.ndarray, rho: float) -> np.ndarray:
    """Gauss-Markov: z_t = rho z_{t-1} + sqrt(1 - rho^2) w_t keeps |z|^2 ~ Exp(1) (Rayleigh)."""
    return rho * prev + np.sqrt(1.0 - rho * rho) * innovation


def estimate_gain(gain: np.ndarray, error_db: float, noise: np.ndarray) -> np.ndarray:
    """The policy's estimate: realised gain times a log-normal error of std `error_db` dB."""
    return gain * 10.0 ** (error_db * noise / 10.0)


def snr(sc: ScenarioConfig, gain: np.ndarray) -> np.ndarray:
    """Received SNR P h / N0 over the ES band (linear)."""
    return sc.tx_power_w * gain / sc.noise_w


def spectral_efficiency(snr_linear: np.ndarray) -> np.ndarray:
    """Shannon: log2(1 + SNR) bit/s/Hz."""
    return np.log2(1.0 + snr_linear)
