"""A local Ray started through the project listens on loopback only and never joins another
cluster it finds on the machine. Each check runs in a fresh process with a private Ray temp
folder and none of the project's environment defaults, as a script using the library would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from grl_aecnn.runtime import RAY_ENV_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}

# Ray imported before the project: the worst order for a script using the library.
LISTENING = """
import json, time, psutil, ray
from grl_aecnn.runtime import init_ray
init_ray()
time.sleep(3)  # the dashboard and agents start listening after ray.init returns
me = psutil.Process()
pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
print(json.dumps(sorted({(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet")
                         if c.status == psutil.CONN_LISTEN and c.pid in pids})))
ray.shutdown()
"""

GCS_ADDRESS = """
import ray
from grl_aecnn.runtime import init_ray
init_ray()
print(ray.get_runtime_context().gcs_address)
ray.shutdown()
"""


@pytest.fixture()
def ray_tmp():
    """A short private Ray temp root (socket paths must stay under 107 characters)."""
    folder = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield folder
    stop_cluster(folder)
    shutil.rmtree(folder, ignore_errors=True)


def named_processes(temp_dir: str) -> list[psutil.Process]:
    """The processes whose command line names ``temp_dir`` (what `pkill -f` in the README matches)."""
    return [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]


def stop_cluster(temp_dir: str) -> list[psutil.Process]:
    """Stop only the Ray of one temp folder (`ray stop` would stop every Ray here), as the README
    does: SIGKILL to the processes that name it and to their children (workers and agents
    rename themselves). Returns whatever of it, grandchildren included, still runs after 20 s."""
    named = named_processes(temp_dir)
    everything = {p for proc in named for p in [proc, *proc.children(recursive=True)]}
    for proc in {p for proc in named for p in [proc, *proc.children()]}:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    deadline = time.monotonic() + 20
    while (alive := [p for p in everything if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    for proc in alive:
        proc.kill()
    return alive


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an exited process nobody has reaped yet holds no socket)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def bare_env(ray_tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV_DEFAULTS and k != "RAY_ADDRESS"}
    return {**env, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_script(script: str, ray_tmp: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], env=bare_env(ray_tmp), cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_local_ray_listens_on_loopback_only(ray_tmp: str) -> None:
    sockets = json.loads(run_script(LISTENING, ray_tmp))
    assert len(sockets) >= 3, sockets  # GCS, raylet, object manager at least: the listing works
    assert {ip for ip, _ in sockets} <= LOOPBACK, sockets


def test_local_run_does_not_join_a_cluster_found_on_the_machine(ray_tmp: str) -> None:
    port = free_port()
    started = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
         "--node-ip-address=127.0.0.1", "--disable-usage-stats"],
        env=bare_env(ray_tmp), capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-3000:]
    deadline = time.monotonic() + 30
    address_file = Path(ray_tmp) / "ray" / "ray_current_cluster"
    while not address_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert address_file.read_text().strip().endswith(f":{port}")  # Ray would join this one by default

    gcs = run_script(GCS_ADDRESS, ray_tmp)
    assert not gcs.endswith(f":{port}"), gcs

    # The README's way to stop only this cluster (by its temp folder) stops all of it.
    assert len(named_processes(ray_tmp)) >= 2  # GCS and raylet at least
    left = stop_cluster(ray_tmp)
    assert not left, [p.pid for p in left]
