"""A real Prometheus (Debian's `prometheus`) on 127.0.0.1 for tests: 1 s scrapes, temp storage."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.services import free_port


def prometheus_path() -> str | None:
    return shutil.which("prometheus")


class Prometheus:
    def __init__(self, workdir: Path, targets: dict[str, list[str]]) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: {json.dumps(hosts)}\n"
            for job, hosts in targets.items()
        )
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n{jobs}"
        )
        self.log_path = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        binary = prometheus_path()
        assert binary is not None
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus did not become ready")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with the reason
            body = json.loads(exc.read())
        return body

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of `promql` now; raises with Prometheus's error if it fails."""
        body = self.api("query", query=promql)
        if body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def values(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Each series of the result by its labels (sorted pairs), with its value."""
        return {
            tuple(sorted(series["metric"].items())): float(series["value"][1])
            for series in self.query(promql)
        }

    def targets_up(self) -> dict[str, bool]:
        active = self.api("targets")["data"]["activeTargets"]
        return {target["scrapeUrl"]: target["health"] == "up" for target in active}
