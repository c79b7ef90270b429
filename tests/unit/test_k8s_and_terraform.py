"""infra/k8s and infra/terraform against the code: the queues, commands, settings and names
they rely on exist, and the promises of the deployment hold (one beat, non-root read-only
pods, autoscaling on the right queues). Schema validation and checkov run in `make lint-infra`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from pipeline.settings import Settings
from workers import queues
from workers.cli import app as cli_app

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the manifests")

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
TERRAFORM = REPO / "infra" / "terraform"
SETTINGS_ADDED_ELSEWHERE = {"PAGEMILL_WEB_TOKEN", "PAGEMILL_METRICS_PORT"}
KNOWN_SETTINGS = {f"PAGEMILL_{n.upper()}" for n in Settings.model_fields} | SETTINGS_ADDED_ELSEWHERE


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if obj:
                found[(obj["kind"], obj["metadata"]["name"])] = obj
    return found


def deployments(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: obj for (kind, name), obj in objects.items() if kind == "Deployment"}


def container(obj: dict[str, Any]) -> dict[str, Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def test_every_component_runs(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    args = {name: " ".join(container(obj)["args"]) for name, obj in deployments(objects).items()}
    assert args == {
        "pagemill-intake": "pagemill ingest",
        "pagemill-worker-prepare": "pagemill worker --queues=prepare,maintenance --pool=prefork "
        "--concurrency=$(PAGEMILL_PREPARE_CONCURRENCY)",
        "pagemill-worker-extract": "pagemill worker --queues=extract --pool=threads "
        "--concurrency=$(PAGEMILL_EXTRACT_CONCURRENCY)",
        "pagemill-beat": "pagemill beat",
        "pagemill-web": "pagemill web --host 0.0.0.0 --port 8080",
    }
    consumed = set()
    for text in args.values():
        match = re.search(r"--queues=(\S+)", text)
        consumed |= set(match.group(1).split(",")) if match else set()
    assert consumed == set(queues.CONSUMED)
    job = objects[("Job", "pagemill-migrate")]
    assert container(job)["args"] == ["pagemill", "migrate"]
    # The options parse with the real CLI (`pagemill web` comes with the dashboard's branch).
    group = typer.main.get_command(cli_app)
    for obj in [*deployments(objects).values(), job]:
        words = [re.sub(r"\$\(PAGEMILL_\w+_CONCURRENCY\)", "2", w) for w in container(obj)["args"]]
        if words[1] != "web":
            group.commands[words[1]].make_context(words[1], words[2:])  # type: ignore[attr-defined]


def test_exactly_one_beat(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    beat = deployments(objects)["pagemill-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    scaled = {
        o["spec"]["scaleTargetRef"]["name"] for (k, _), o in objects.items() if k == "ScaledObject"
    }
    assert "pagemill-beat" not in scaled
    budgets = [o for (k, _), o in objects.items() if k == "PodDisruptionBudget"]
    assert all(
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] != "pagemill-beat"
        for b in budgets
    )


def test_pods_are_non_root_read_only_and_sized(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    workloads = [o for (k, _), o in objects.items() if k in ("Deployment", "Job")]
    assert len(workloads) == 6
    for obj in workloads:
        pod = obj["spec"]["template"]["spec"]
        name = obj["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name  # the image's user
        assert pod["automountServiceAccountToken"] is False, name
        ctr = container(obj)
        assert ctr["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert ctr["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert {"cpu", "memory"} <= set(ctr["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(ctr["resources"]["limits"]), name
        assert {"name": "tmp", "mountPath": "/tmp"} in ctr["volumeMounts"], name
        refs = {next(iter(ref.values()))["name"] for ref in ctr["envFrom"]}
        assert refs == {"pagemill"}, name


def test_probes_use_the_agreed_endpoints(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    for name, obj in deployments(objects).items():
        ctr = container(obj)
        if name == "pagemill-beat":
            assert "livenessProbe" not in ctr  # no endpoint; justified in the manifest
            continue
        ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
        live, ready = ctr["livenessProbe"]["httpGet"], ctr["readinessProbe"]["httpGet"]
        if name == "pagemill-web":
            assert ports == {"http": 8080}
            assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
        else:
            assert ports == {"metrics": 9808}
            assert live == {"path": "/metrics", "port": "metrics"}


def test_every_scaled_deployment_has_a_disruption_budget(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    budgets = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for (k, _), o in objects.items()
        if k == "PodDisruptionBudget"
    }
    assert budgets == set(deployments(objects)) - {"pagemill-beat"}
    for name, obj in deployments(objects).items():
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == name
        assert obj["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}


def test_keda_scales_on_the_queues_the_workers_consume(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"]["triggers"]
        for (k, _), o in objects.items()
        if k == "ScaledObject"
    }
    assert set(scaled) == {"pagemill-worker-prepare", "pagemill-worker-extract", "pagemill-intake"}
    config = objects[("ConfigMap", "pagemill")]["data"]
    for target, queue in (
        ("pagemill-worker-prepare", queues.PREPARE),
        ("pagemill-worker-extract", queues.EXTRACT),
    ):
        (trigger,) = scaled[target]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue
        assert trigger["metadata"]["addressFromEnv"] in config
        broker_db = config["PAGEMILL_BROKER_URL"].rsplit("/", 1)[1]
        assert trigger["metadata"]["databaseIndex"] == broker_db
        assert config["PAGEMILL_BROKER_URL"].split("//")[1].startswith(config["REDIS_ADDRESS"])
    (sqs,) = scaled["pagemill-intake"]
    assert sqs["type"] == "aws-sqs-queue"
    assert sqs["metadata"]["queueURLFromEnv"] == "PAGEMILL_SQS_QUEUE_URL"
    assert sqs["metadata"]["awsRegion"] == config["PAGEMILL_S3_REGION"]
    auth = objects[("TriggerAuthentication", sqs["authenticationRef"]["name"])]
    assert auth["spec"]["podIdentity"]["provider"] == "aws"


def test_config_holds_only_settings_and_no_secret(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    data = objects[("ConfigMap", "pagemill")]["data"]
    names = {k for k in data if k.startswith("PAGEMILL_")}
    assert names <= KNOWN_SETTINGS, names - KNOWN_SETTINGS
    secret_like = {"PAGEMILL_DATABASE_URL", "PAGEMILL_WEB_TOKEN", "PAGEMILL_ANTHROPIC_API_KEY"}
    assert not names & secret_like
    assert not any(kind == "Secret" for kind, _ in objects)


def test_service_accounts_match_the_terraform_roles(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    iam = (TERRAFORM / "iam.tf").read_text(encoding="utf-8")
    subjects = set(re.findall(r"system:serviceaccount:\$\{var\.k8s_namespace\}:([a-z-]+)", iam))
    accounts = {name for kind, name in objects if kind == "ServiceAccount"}
    assert subjects == {"pagemill-intake", "pagemill-worker"}
    assert subjects <= accounts
    used = {
        o["spec"]["template"]["spec"]["serviceAccountName"] for o in deployments(objects).values()
    }
    assert used == accounts


def test_terraform_outputs_are_settings() -> None:
    outputs = (TERRAFORM / "outputs.tf").read_text(encoding="utf-8")
    names = set(re.findall(r"\b(PAGEMILL_[A-Z0-9_]+)\b", outputs))
    assert names == {"PAGEMILL_S3_REGION", "PAGEMILL_SQS_QUEUE_URL", "PAGEMILL_RECONCILE_BUCKETS"}
    assert names <= KNOWN_SETTINGS


def test_terraform_least_privilege() -> None:
    iam = (TERRAFORM / "iam.tf").read_text(encoding="utf-8")
    actions = set(re.findall(r'"((?:s3|sqs|kms):[A-Za-z*]+)"', iam))
    assert not any(a.endswith("*") for a in actions), "no wildcard actions"
    assert not {"s3:PutObject", "s3:DeleteObject", "sqs:SendMessage", "sqs:PurgeQueue"} & actions
    assert 'resources = ["*"]' not in iam
