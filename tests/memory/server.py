"""The memory service as a real process (`python -m bionic_memory`), for gRPC tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.ports import free_ports


class MemoryProcess:
    def __init__(self, data_dir: Path, dimension: int) -> None:
        self.port, self.metrics_port = free_ports(2)
        self.target = f"127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "BIONIC_MEMORY_PORT": str(self.port),
            "BIONIC_MEMORY_DATA_DIR": str(data_dir),
            "BIONIC_MEMORY_DIMENSION": str(dimension),
            "BIONIC_MEMORY_METRICS_PORT": str(self.metrics_port),
            "BIONIC_MEMORY_LOG_LEVEL": "WARNING",
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> MemoryProcess:
        self._proc = subprocess.Popen([sys.executable, "-m", "bionic_memory"], env=self._env)
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"memory service exited with {self._proc.returncode}")
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("memory service did not become healthy")
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no shutdown handler, no flush."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(10)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(30)
