"""docker-compose.yml and infra/Dockerfile: valid, complete, and consistent with Settings.

The static checks parse the YAML directly; `docker-compose config` validates the file against
Compose's schema when the binary is installed (no Docker engine is needed for that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "infra" / "Dockerfile"

SERVICES = {"postgres", "redis", "minio", "minio-setup", "migrate", "intake", "worker"}
APP_SERVICES = {"migrate", "intake", "worker"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"][name]
    return result


def healthcheck_text(svc: dict[str, Any]) -> str:
    test = svc["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def conditions(svc: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in svc.get("depends_on", {}).items()}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    assert service(compose, "postgres")["image"].startswith("postgres:16")
    assert service(compose, "redis")["image"].startswith("redis:7")


def test_health_checks(compose: dict[str, Any]) -> None:
    assert "pg_isready" in healthcheck_text(service(compose, "postgres"))
    assert "redis-cli ping" in healthcheck_text(service(compose, "redis"))
    assert "/minio/health/live" in healthcheck_text(service(compose, "minio"))
    assert "/healthz" in healthcheck_text(service(compose, "intake"))
    assert ":8087" in healthcheck_text(service(compose, "intake"))


def test_migrate_is_a_one_shot_that_gates_the_app(compose: dict[str, Any]) -> None:
    migrate = service(compose, "migrate")
    assert migrate["command"] == ["pagemill", "migrate"]
    assert migrate["restart"] == "no"
    assert conditions(migrate) == {"postgres": "service_healthy"}
    for name in ("intake", "worker"):
        deps = conditions(service(compose, name))
        assert deps["migrate"] == "service_completed_successfully", name
        assert deps["postgres"] == "service_healthy", name
        assert deps["redis"] == "service_healthy", name


def test_app_services_share_the_image(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        svc = service(compose, name)
        assert svc["build"] == {"context": ".", "dockerfile": "infra/Dockerfile"}, name
        assert svc["image"] == "pagemill:local", name
    assert service(compose, "intake")["command"] == ["pagemill", "ingest", "--webhook"]
    # The bare worker (both stages) with beat: without it nothing sweeps stuck documents.
    assert service(compose, "worker")["command"] == ["pagemill", "worker", "--beat"]


def test_minio_posts_events_to_the_intake(compose: dict[str, Any]) -> None:
    env = service(compose, "minio")["environment"]
    assert env["MINIO_NOTIFY_WEBHOOK_ENABLE_PAGEMILL"] == "on"
    assert env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_PAGEMILL"] == "http://intake:8087/events"
    assert "${PAGEMILL_WEBHOOK_SECRET" in env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_PAGEMILL"]
    assert env["MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_PAGEMILL"].startswith("/")

    setup = service(compose, "minio-setup")
    assert conditions(setup) == {"minio": "service_healthy"}
    assert setup["restart"] == "no"
    script = " ".join(setup["command"])
    assert "mc mb --ignore-existing local/pagemill" in script
    assert "arn:minio:sqs::PAGEMILL:webhook" in script
    assert "--event put" in script

    intake_env = service(compose, "intake")["environment"]
    assert intake_env["PAGEMILL_WEBHOOK_HOST"] == "0.0.0.0"
    assert "${PAGEMILL_WEBHOOK_SECRET" in intake_env["PAGEMILL_WEBHOOK_SECRET"]
    # The secret goes only where it is needed.
    assert "PAGEMILL_WEBHOOK_SECRET" not in service(compose, "worker")["environment"]


def test_pagemill_variables_are_settings(compose: dict[str, Any]) -> None:
    known = {f"PAGEMILL_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = service(compose, name)["environment"]
        names = {key for key in env if key.startswith("PAGEMILL_")}
        assert names - known == set(), f"{name}: unknown settings {sorted(names - known)}"
        assert env["PAGEMILL_DATABASE_URL"] == (
            "postgresql+psycopg://pagemill:pagemill@postgres:5432/pagemill"
        )
        assert env["PAGEMILL_BROKER_URL"] == "redis://redis:6379/0"
        assert env["PAGEMILL_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    for package in ("tesseract-ocr", "tesseract-ocr-deu", "tesseract-ocr-fra", "tesseract-ocr-nld"):
        assert package in text
    assert "pip install ." in text
    users = [line.split(None, 1)[1] for line in lines if line.startswith("USER ")]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


# --- docker-compose itself ---------------------------------------------------------------------


def run_compose(tmp_path: Path, *args: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed; the file was only checked as YAML")
    env_file = tmp_path / "empty.env"  # ignore a developer's .env
    env_file.write_text("", encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAGEMILL_", "MINIO_", "COMPOSE_", "DOCKER_"))
    }
    if secret is not None:
        env["PAGEMILL_WEBHOOK_SECRET"] = secret
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", "-q", secret="test-secret")
    assert done.returncode == 0, done.stderr


def test_docker_compose_config_resolves(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", secret="test-secret")
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == SERVICES
    intake = resolved["services"]["intake"]
    assert intake["environment"]["PAGEMILL_WEBHOOK_SECRET"] == "test-secret"
    assert intake["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    minio_env = resolved["services"]["minio"]["environment"]
    assert minio_env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_PAGEMILL"] == "test-secret"


def test_docker_compose_requires_the_webhook_secret(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", "-q", secret=None)
    assert done.returncode != 0
    assert "PAGEMILL_WEBHOOK_SECRET" in done.stderr
