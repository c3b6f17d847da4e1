"""Real servers on 127.0.0.1 for integration tests: an `mlflow server`, a `ray start --head` (with
worker nodes) and an S3-compatible object store (`moto_server`).

Each starts in its own session and is stopped by killing exactly the processes of that session
and their descendants (never `ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port nobody listens on right now (on loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """This environment with the venv first on PATH (as if activated) and Ray kept on loopback."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def _session_tree(leader: int) -> list[psutil.Process]:
    """Processes of the leader's session plus all their descendants (Ray jobs start new sessions)."""
    members: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            stat = Path(f"/proc/{proc.pid}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) == leader:
                members[proc.pid] = proc
    for proc in list(members.values()):
        with contextlib.suppress(psutil.Error):
            members.update({child.pid: child for child in proc.children(recursive=True)})
    return list(members.values())


def kill_session(proc: subprocess.Popen, grace_s: float = 0.0, timeout_s: float = 20.0) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it spawned."""
    if grace_s and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tree = _session_tree(proc.pid)
        if not tree:
            break
        for member in tree:
            with contextlib.suppress(psutil.Error):
                member.kill()
        psutil.wait_procs(tree, timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@contextlib.contextmanager
def mlflow_server(root: Path, timeout_s: float = 90.0, artifacts: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    """A real `mlflow server` (sqlite backend, artifacts under ``root`` or at ``artifacts``, e.g. a
    bucket); yields its URL."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "mlflow-server.log"
    cmd = [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
           "--artifacts-destination", artifacts or str(root / "artifacts")]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=server_env(**(env or {})), stdout=out, stderr=subprocess.STDOUT,
                                cwd=root, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, timeout_s, log)
        yield url
    finally:
        kill_session(proc, grace_s=10)


@dataclasses.dataclass(frozen=True)
class RayHead:
    gcs_address: str
    dashboard_url: str
    temp_dir: Path


NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
              "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def _port_args(names: tuple[str, ...]) -> tuple[dict[str, int], list[str]]:
    ports = {name: free_port() for name in names}
    return ports, [arg for name, port in ports.items() for arg in (f"--{name}", str(port))]


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, timeout_s: float = 120.0, env: dict[str, str] | None = None) -> Iterator[RayHead]:
    """A real `ray start --head` on loopback with its own ports and temp dir; yields its addresses.

    The temp dir path is short: Ray's Unix sockets live under it (107-byte limit).
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="grlray-", dir="/tmp"))
    ports, port_args = _port_args(("port", "dashboard-port", "ray-client-server-port", *NODE_PORTS))
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block", "--dashboard-host", "127.0.0.1",
           "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
           "--object-store-memory", str(300 * 1024 * 1024),
           "--disable-usage-stats", "--temp-dir", str(temp_dir), *port_args]
    log = temp_dir / "ray-start.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=server_env(**(env or {})), stdout=out, stderr=subprocess.STDOUT,
                                cwd=temp_dir, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{ports['dashboard-port']}"
        wait_http(f"{url}/api/jobs/", proc, timeout_s, log)  # the Jobs API, not just the dashboard
        head = RayHead(f"127.0.0.1:{ports['port']}", url, temp_dir)
        deadline = time.monotonic() + timeout_s
        while not _node_ids(head):  # the state API lists the head itself a little later
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the head node is not listed:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield head
    finally:
        kill_session(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclasses.dataclass
class RayWorker:
    """A worker node (`ray start --address`): its own raylet and object store."""

    proc: subprocess.Popen
    node_id: str

    def kill_raylet(self) -> None:
        """Kill this node's raylet (the node is lost, as when a machine dies)."""
        raylets = [p for p in _session_tree(self.proc.pid) if p.name() == "raylet"]
        assert raylets, "the worker node has no raylet"
        for raylet in raylets:
            raylet.kill()


def _node_ids(head: RayHead) -> set[str]:
    """Ids of the alive nodes, from the head's state API."""
    import json

    with contextlib.suppress(OSError, ValueError, KeyError):
        with urllib.request.urlopen(f"{head.dashboard_url}/api/v0/nodes?limit=1000", timeout=30) as resp:  # noqa: S310
            rows = json.loads(resp.read())["data"]["result"]["result"]
        return {row["node_id"] for row in rows if row["state"] == "ALIVE"}
    return set()


def alive_actors(head: RayHead) -> list[dict[str, Any]]:
    """The alive actors (``class_name``, ``node_id``, ...), from the head's state API."""
    import json

    with urllib.request.urlopen(f"{head.dashboard_url}/api/v0/actors?limit=10000", timeout=30) as resp:  # noqa: S310
        rows = json.loads(resp.read())["data"]["result"]["result"]
    return [row for row in rows if row["state"] == "ALIVE"]


@contextlib.contextmanager
def ray_worker(head: RayHead, num_cpus: int, env: dict[str, str] | None = None,
               timeout_s: float = 120.0) -> Iterator[RayWorker]:
    """A worker node joined to ``head`` on loopback, with its own ports and temp dir (as on its own
    machine: nodes sharing one would delete each other's job packages); yields it once it is alive."""
    before = _node_ids(head)
    temp_dir = Path(tempfile.mkdtemp(prefix="grlnode-", dir="/tmp"))
    _, port_args = _port_args(NODE_PORTS)
    cmd = [str(VENV_BIN / "ray"), "start", "--address", head.gcs_address, "--node-ip-address", "127.0.0.1",
           "--block", "--num-cpus", str(num_cpus), "--temp-dir", str(temp_dir),
           "--object-store-memory", str(200 * 1024 * 1024), "--disable-usage-stats", *port_args]
    log = temp_dir / "ray-start.log"
    # Ray refuses a second node on a machine unless told it is a cluster; --node-ip-address keeps it on loopback.
    # A busy machine starts a raylet slowly.
    slow_start = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_agent_register_timeout_ms": "300000"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=server_env(**{**(env or {}), **slow_start}), stdout=out,
                                stderr=subprocess.STDOUT, cwd=temp_dir, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not (new := _node_ids(head) - before):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker node did not join:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield RayWorker(proc, new.pop())
    finally:
        kill_session(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real tracking server for the session (about 0.5 GB; tests use their own experiments)."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as url:
        yield url


@dataclasses.dataclass(frozen=True)
class S3Store:
    """An S3-compatible server on loopback and the environment that reaches it."""

    endpoint: str
    env: dict[str, str]

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The object keys (files) in ``bucket`` under ``prefix``."""
        client = self.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", [])
                      if not item["Key"].endswith("/"))  # pyarrow's folder markers


@contextlib.contextmanager
def s3_server(root: Path, timeout_s: float = 60.0) -> Iterator[S3Store]:
    """`moto_server` (moto's S3-compatible server mode) on a free loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "moto-server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                env=server_env(), stdout=out, stderr=subprocess.STDOUT, cwd=root,
                                start_new_session=True)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{endpoint}/moto-api/", proc, timeout_s, log)
        yield S3Store(endpoint, {"AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint,
                                 "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                                 "AWS_EC2_METADATA_DISABLED": "true"})
    finally:
        kill_session(proc)


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    """One S3-compatible server for the session (tests use their own buckets)."""
    with s3_server(tmp_path_factory.mktemp("s3-server")) as store:
        yield store


@pytest.fixture()
def s3_env(s3_store: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    """This process pointed at the session's S3 server, with its own scratch folder."""
    from grl_aecnn import storage

    for key, value in {**s3_store.env, "GRL_AECNN_SCRATCH": str(tmp_path / "scratch")}.items():
        monkeypatch.setenv(key, value)
    storage._filesystem.cache_clear()
    yield s3_store
    storage._filesystem.cache_clear()
