"""A one-node Ceph cluster with radosgw on 127.0.0.1: a real S3 server that pushes bucket events.

`Radosgw.start()` builds a throw-away cluster in a directory of its own (one monitor, one
memstore OSD, pool size 1, no authentication between the daemons, no manager) and starts
radosgw's S3 endpoint on a free port, then creates an S3 user with the keys in `access_key` /
`secret_key`. Everything runs as child processes in their own process groups, in the
foreground (``-f``), and `stop()` kills them; nothing is installed as a service and nothing is
left behind but the directory, which the caller owns.

radosgw sends S3 bucket notifications through SNS-style topics. `create_http_topic()` makes a
*persistent* topic whose events wait in RADOS while the HTTP endpoint is down and are delivered
when it is back. radosgw cannot send a custom header, so the endpoint's user-info carries the
secret (``http://user:secret@host/path``), which libcurl sends as HTTP Basic authentication;
radosgw refuses a secret in a plain-HTTP endpoint unless told it is fine
(``rgw allow notification secrets in cleartext``), which on a loopback-only test cluster it is.

The Debian packages are ``radosgw ceph-mon ceph-osd``; `missing_binaries()` lists what is not
installed so a fixture can skip with a clear message. Figures from FIELD-NOTES: ~15 s to start,
~150 MB; a persistent topic's queue is polled every few seconds once radosgw owns it, and a new
queue is picked up within ~30 s, so callers wait for results instead of sleeping.

Measured here with Ceph 16.2 (Debian 12): when the endpoint refuses connections (the intake is
down), radosgw retries the queue's entries in a tight loop and, within a second or two, its
queue processing stops for good with one push counted as pending (``pubsub_push_pending``
stays 1); the events stay queued in RADOS, and a restarted radosgw delivers them. A receiver
that answers 503 does not trigger it. See `restart_gateway`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.support.services import free_port

__all__ = ["BINARIES", "Radosgw", "RadosgwError", "missing_binaries", "perf_counters"]

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")
REGION = "us-east-1"  # radosgw's default zonegroup accepts any region in the signature


class RadosgwError(RuntimeError):
    """The cluster did not come up; the message ends with the tail of the relevant log."""


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if shutil.which(name) is None]


def _wait(predicate: Callable[[], bool], timeout: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise RadosgwError(f"timed out after {timeout:g} s waiting for {what}\n{tail}")


def _forwarded_https(request: Any, **_: Any) -> None:
    request.headers["X-Forwarded-Proto"] = "https"


@dataclass
class Radosgw:
    """See the module docstring. `root` must be an empty directory the caller removes."""

    root: Path
    access_key: str = "pagemill-test-access"
    secret_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    port: int = field(default_factory=free_port)
    mon_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    def log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> Radosgw:
        try:
            self._write_config()
            self._make_monitor()
            self._spawn("mon.a", ["ceph-mon", "-f", "-i", "a"])
            self._make_osd()
            self._start_osd()
            self._spawn("client.rgw.a", ["radosgw", "-f", "-n", "client.rgw.a"])
            _wait(self._s3_answers, timeout, "radosgw to answer", self.log("client.rgw.a"))
            self._admin(
                "user",
                "create",
                "--uid=pagemill-test",
                "--display-name=pagemill tests",
                f"--access-key={self.access_key}",
                f"--secret-key={self.secret_key}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def restart_gateway(self, timeout: float = 60.0) -> None:
        """Stop radosgw (not the cluster) and start it again; its persistent queues stay in
        RADOS and the new process delivers them once it owns them (the old owner's locks are
        broken first, else they would hold the queues until they expire, ~1 min)."""
        process = self.processes.pop("client.rgw.a")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        self._break_queue_locks()
        self._spawn("client.rgw.a", ["radosgw", "-f", "-n", "client.rgw.a"])
        _wait(self._s3_answers, timeout, "radosgw to answer again", self.log("client.rgw.a"))

    def _break_queue_locks(self) -> None:
        """Free the persistent queues the stopped radosgw owned. Its ownership locks would
        otherwise hold them for up to a minute (until they expire) before the new process may
        deliver; nothing else uses them, as only one radosgw runs."""
        pool, namespace = "default.rgw.log", "notif"
        listing = self._run("rados", "-p", pool, "-N", namespace, "ls")
        for obj in listing.split():
            info = json.loads(self._run("rados", "-p", pool, "-N", namespace, "lock", "list", obj))
            for lock in info.get("locks", []):
                detail = json.loads(
                    self._run(
                        "rados", "-p", pool, "-N", namespace, "lock", "info", obj, lock["name"]
                    )
                )
                for locker in detail.get("lockers", []):
                    self._run(
                        "rados",
                        "-p",
                        pool,
                        "-N",
                        namespace,
                        "lock",
                        "break",
                        obj,
                        lock["name"],
                        locker["name"],
                        "--lock-cookie",
                        locker["cookie"],
                    )

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.processes.clear()

    # --- S3 and SNS ----------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}
            ),
        )

    def create_http_topic(self, name: str, push_endpoint: str) -> str:
        """A persistent topic pushing to `push_endpoint`; returns its ARN."""
        sns = self.client("sns")
        # A topic whose endpoint holds a secret may only be created over HTTPS; radosgw trusts
        # a proxy's word for that when told to (rgw trust forwarded https).
        sns.meta.events.register("before-send.sns.CreateTopic", _forwarded_https)
        try:
            response = sns.create_topic(
                Name=name,
                Attributes={"push-endpoint": push_endpoint, "persistent": "true"},
            )
        finally:
            sns.close()
        return str(response["TopicArn"])

    def notify(self, s3: Any, bucket: str, topic_arn: str) -> None:
        """Send the bucket's object-created events to the topic (one configuration per bucket:
        radosgw merges configurations by id, and re-adding one on a bucket broke delivery)."""
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "TopicConfigurations": [
                    {"Id": "pagemill", "TopicArn": topic_arn, "Events": ["s3:ObjectCreated:*"]}
                ]
            },
        )

    # --- set-up steps --------------------------------------------------------------------------

    def _write_config(self) -> None:
        for sub in ("run", "log", "mon", "osd"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        root = self.root
        self.conf.write_text(
            f"""[global]
fsid = {uuid.uuid4()}
mon host = v1:127.0.0.1:{self.mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 1073741824
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
mon data = {root}/mon/$cluster-$id
osd data = {root}/osd/$cluster-$id
keyring = {root}/keyring
mon cluster log file = {root}/log/cluster.log

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:{self.port}
rgw trust forwarded https = true
""",
            encoding="utf-8",
        )

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [*args, "-c", str(self.conf)] if args[0] != "monmaptool" else list(args),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RadosgwError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return done.stdout

    def _admin(self, *args: str) -> str:
        return self._run("radosgw-admin", *args)

    def _make_monitor(self) -> None:
        keyring = str(self.root / "keyring")
        self._run(
            "ceph-authtool",
            "--create-keyring",
            keyring,
            "--gen-key",
            "-n",
            "mon.",
            "--cap",
            "mon",
            "allow *",
        )
        self._run(
            "ceph-authtool",
            keyring,
            "--gen-key",
            "-n",
            "client.admin",
            "--cap",
            "mon",
            "allow *",
            "--cap",
            "osd",
            "allow *",
            "--cap",
            "mds",
            "allow *",
            "--cap",
            "mgr",
            "allow *",
        )
        monmap = str(self.root / "monmap")
        fsid = next(
            line.split("=", 1)[1].strip()
            for line in self.conf.read_text().splitlines()
            if line.startswith("fsid")
        )
        self._run(
            "monmaptool",
            "--create",
            "--fsid",
            fsid,
            "--addv",
            "a",
            f"[v1:127.0.0.1:{self.mon_port}]",
            monmap,
        )
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", keyring)

    def _make_osd(self) -> None:
        # The OSD's uuid must be the one the monitor knows, or it may not update its own
        # entry ("wrong fsid") and never comes up.
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "osd", "create", osd_uuid).strip()
        if osd_id != "0":
            raise RadosgwError(f"expected OSD id 0, got {osd_id!r}")
        # The data directory must exist before --mkfs (else ceph_assert(r >= 0)).
        (self.root / "osd" / "ceph-0").mkdir(parents=True, exist_ok=True)
        self._run("ceph-osd", "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)

    def _start_osd(self, attempts: int = 4) -> None:
        # A freshly started OSD sometimes asks the monitor before it has the monitor map, gets
        # "wrong fsid" and exits (about one start in six here); starting it again works.
        for attempt in range(1, attempts + 1):
            self._spawn("osd.0", ["ceph-osd", "-f", "-i", "0"])
            process = self.processes["osd.0"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None:
                if self._osd_up():
                    return
                time.sleep(0.5)
            if process.poll() is None:
                raise RadosgwError("the OSD did not come up within 60 s\n" + self._tail("osd.0"))
            if attempt == attempts:
                # The monitor's side of the refusal too: why it would not take the OSD's word.
                raise RadosgwError(
                    f"the OSD exited {attempts} times\n"
                    + self._tail("osd.0")
                    + "\n--- mon.a ---\n"
                    + self._tail("mon.a")
                )

    def _osd_up(self) -> bool:
        try:
            stat = json.loads(self._run("ceph", "osd", "stat", "--format", "json"))
        except (RadosgwError, json.JSONDecodeError):
            return False
        return int(stat.get("num_up_osds", 0)) >= 1

    def _tail(self, name: str, lines: int = 30) -> str:
        log = self.log(name)
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = (self.root / "log" / f"{name}.stdout").open("wb")
        try:
            self.processes[name] = subprocess.Popen(
                [*argv, "-c", str(self.conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()

    def _s3_answers(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RadosgwError(f"{name} exited ({process.returncode})\n" + self._tail(name))
        try:
            with urllib.request.urlopen(self.endpoint_url, timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except OSError:
            return False


def perf_counters(rgw: Radosgw) -> dict[str, int]:
    """radosgw's notification counters (``pubsub_push_ok``, ``pubsub_push_failed``, ...) from
    its admin socket."""
    out = subprocess.run(
        ["ceph", "--admin-daemon", str(rgw.root / "run" / "client.rgw.a.asok"), "perf", "dump"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    counters = json.loads(out).get("rgw", {})
    return {k: int(v) for k, v in counters.items() if k.startswith("pubsub_") and _is_int(v)}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
