"""docker-compose.yml and infra/Dockerfile: valid, complete, and consistent with the code.

The static checks parse the YAML directly and compare it with what the code defines (settings,
queue names, CLI commands); `docker-compose config` validates the file against Compose's schema
and resolves the variables (no Docker engine is needed for that). hadolint and yamllint run in
`make lint-infra`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer

from pipeline.settings import Settings
from workers import queues
from workers.cli import app as cli_app

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read docker-compose.yml")

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "infra" / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"

APP_SERVICES = {"migrate", "intake", "worker-prepare", "worker-extract", "beat", "web"}
SERVICES = APP_SERVICES | {"postgres", "redis", "minio", "minio-setup", "prometheus", "grafana"}
ONE_SHOTS = {"migrate", "minio-setup"}
REQUIRED_SECRETS = {
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "PAGEMILL_WEBHOOK_SECRET",
    "PAGEMILL_WEB_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
}
# Settings other branches add at the same time as this file (web dashboard, metrics); once they
# are fields of Settings this set is only a no-op.
SETTINGS_ADDED_ELSEWHERE = {"PAGEMILL_WEB_TOKEN", "PAGEMILL_METRICS_PORT"}


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


def command_text(svc: dict[str, Any]) -> str:
    command = svc.get("command", [])
    return " ".join(command) if isinstance(command, list) else str(command)


def conditions(svc: dict[str, Any]) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in svc.get("depends_on", {}).items()}


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    assert service(compose, "postgres")["image"].startswith("postgres:16")
    assert service(compose, "redis")["image"].startswith("redis:7")
    for name, svc in compose["services"].items():
        image = svc["image"]
        # Pinned: a tag that names a version, never "latest" or a bare name.
        assert ":" in image.split("/")[-1] and not image.endswith(":latest"), name


def test_redis_keeps_the_broker_messages(compose: dict[str, Any]) -> None:
    command = command_text(service(compose, "redis"))
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in service(compose, "redis")["volumes"])


def test_health_checks(compose: dict[str, Any]) -> None:
    assert "pg_isready" in healthcheck_text(service(compose, "postgres"))
    assert "redis-cli ping" in healthcheck_text(service(compose, "redis"))
    assert "/minio/health/live" in healthcheck_text(service(compose, "minio"))
    assert "/-/ready" in healthcheck_text(service(compose, "prometheus"))
    assert "/api/health" in healthcheck_text(service(compose, "grafana"))
    env = {name: service(compose, name)["environment"] for name in ("intake", "web")}
    assert env["intake"]["HEALTHCHECK_URL"] == "http://127.0.0.1:8087/healthz"
    assert env["web"]["HEALTHCHECK_URL"] == "http://127.0.0.1:8080/healthz"
    for name in APP_SERVICES - ONE_SHOTS - {"beat"}:
        assert healthcheck_text(service(compose, name)) == "CMD python /app/healthcheck.py", name
    for name in ("migrate", "beat"):  # a one-shot, and a process without an HTTP endpoint
        assert service(compose, name)["healthcheck"] == {"disable": True}


def test_restart_policies_and_limits(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        expected = "no" if name in ONE_SHOTS else "unless-stopped"
        assert svc["restart"] == expected, name
        if name != "minio-setup":
            limits = svc["deploy"]["resources"]["limits"]
            assert limits["cpus"] and limits["memory"], name


def test_migrate_is_a_one_shot_that_gates_the_app(compose: dict[str, Any]) -> None:
    migrate = service(compose, "migrate")
    assert migrate["command"] == ["pagemill", "migrate"]
    assert conditions(migrate) == {"postgres": "service_healthy"}
    for name in APP_SERVICES - {"migrate"}:
        deps = conditions(service(compose, name))
        assert deps["migrate"] == "service_completed_successfully", name
        assert deps["postgres"] == "service_healthy", name
        assert deps["redis"] == "service_healthy", name


def test_app_services_share_one_read_only_image(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        svc = service(compose, name)
        assert svc["build"] == {"context": ".", "dockerfile": "infra/Dockerfile"}, name
        assert svc["image"] == "pagemill:local", name
        assert svc["read_only"] is True, name
        assert svc["tmpfs"] == ["/tmp"], name
        assert svc["init"] is True, name


def test_the_commands_exist(compose: dict[str, Any]) -> None:
    commands = {c.name or c.callback.__name__ for c in cli_app.registered_commands if c.callback}
    for name in APP_SERVICES:
        words = command_text(service(compose, name)).split()
        subcommand = words[words.index("pagemill") + 1]
        # `pagemill web` comes with the dashboard's branch; everything else is here already.
        assert subcommand in commands or subcommand == "web", name
        if subcommand in commands:
            # The options parse with the real CLI (nothing runs: only a click context is made).
            args = [w.replace("${PAGEMILL_PREPARE_CONCURRENCY:-2}", "2") for w in words]
            args = [w.replace("${PAGEMILL_EXTRACT_CONCURRENCY:-64}", "64") for w in args]
            sub = typer.main.get_command(cli_app).commands[subcommand]  # type: ignore[attr-defined]
            sub.make_context(subcommand, args[args.index(subcommand) + 1 :])
    assert service(compose, "intake")["command"] == ["pagemill", "ingest", "--webhook"]
    assert service(compose, "web")["command"] == [
        "pagemill",
        "web",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]


def test_workers_cover_every_queue_on_the_pool_that_fits(compose: dict[str, Any]) -> None:
    prepare = command_text(service(compose, "worker-prepare"))
    extract = command_text(service(compose, "worker-extract"))
    assert f"--queues {queues.PREPARE},{queues.MAINTENANCE} --pool prefork" in prepare
    assert f"--queues {queues.EXTRACT} --pool threads" in extract
    consumed = {queues.PREPARE, queues.MAINTENANCE, queues.EXTRACT}
    assert consumed == set(queues.CONSUMED)


def test_exactly_one_beat(compose: dict[str, Any]) -> None:
    beats = [
        name
        for name, svc in compose["services"].items()
        if "pagemill beat" in command_text(svc) or "--beat" in command_text(svc)
    ]
    assert beats == ["beat"]
    assert service(compose, "beat")["command"] == ["pagemill", "beat"]
    assert service(compose, "beat")["deploy"]["replicas"] == 1


def test_minio_posts_events_to_the_intake(compose: dict[str, Any]) -> None:
    env = service(compose, "minio")["environment"]
    assert env["MINIO_NOTIFY_WEBHOOK_ENABLE_PAGEMILL"] == "on"
    assert env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_PAGEMILL"] == "http://intake:8087/events"
    assert "${PAGEMILL_WEBHOOK_SECRET" in env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_PAGEMILL"]
    assert env["MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_PAGEMILL"].startswith("/")

    setup = service(compose, "minio-setup")
    assert conditions(setup) == {"minio": "service_healthy"}
    script = " ".join(setup["command"])
    assert "mc mb --ignore-existing local/pagemill" in script
    assert "arn:minio:sqs::PAGEMILL:webhook" in script
    assert "--event put" in script

    intake_env = service(compose, "intake")["environment"]
    assert intake_env["PAGEMILL_WEBHOOK_HOST"] == "0.0.0.0"
    assert "${PAGEMILL_WEBHOOK_SECRET" in intake_env["PAGEMILL_WEBHOOK_SECRET"]


def test_secrets_go_only_where_needed(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = service(compose, name)["environment"]
        assert ("PAGEMILL_WEBHOOK_SECRET" in env) == (name == "intake"), name
        assert ("PAGEMILL_WEB_TOKEN" in env) == (name == "web"), name
    text = COMPOSE.read_text(encoding="utf-8")
    for secret in REQUIRED_SECRETS:
        # Only ever required from the environment, never given a default.
        assert f"${{{secret}:-" not in text, secret
        assert f"${{{secret}:?" in text, secret


def test_env_example_names_every_variable_and_holds_no_secret() -> None:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    for secret in REQUIRED_SECRETS:
        assert values.get(secret) == "", secret
    gitignore = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in gitignore


def test_published_ports_are_local_only(compose: dict[str, Any]) -> None:
    published = {}
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
            published[name] = port
    assert set(published) == {"minio", "web", "prometheus", "grafana"}


def test_monitoring_is_provisioned_from_the_repository(compose: dict[str, Any]) -> None:
    prometheus = service(compose, "prometheus")
    assert "./infra/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = service(compose, "grafana")
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert conditions(grafana)["prometheus"] == "service_healthy"


def test_grafana_finds_its_dashboards_and_data_sources(compose: dict[str, Any]) -> None:
    # The provisioning files and the compose file must agree: the dashboards folder is mounted
    # where the dashboard provider looks, and every variable a data source reads is set.
    grafana = service(compose, "grafana")
    mounts = dict(volume.split(":")[:2] for volume in grafana["volumes"])
    provisioning = REPO / "infra/grafana/provisioning"
    providers = yaml.safe_load((provisioning / "dashboards/pagemill.yaml").read_text())
    paths = {provider["options"]["path"] for provider in providers["providers"]}
    assert paths == {mounts["./infra/grafana/dashboards"]}
    sources = (provisioning / "datasources").glob("*.y*ml")
    wanted = {m for f in sources for m in re.findall(r"\$\{?(\w+)\}?", f.read_text())}
    assert wanted, "the data sources read their settings from the environment"
    assert wanted <= set(grafana["environment"]), sorted(wanted - set(grafana["environment"]))


def test_pagemill_variables_are_settings(compose: dict[str, Any]) -> None:
    known = {f"PAGEMILL_{name.upper()}" for name in Settings.model_fields}
    known |= SETTINGS_ADDED_ELSEWHERE
    for name in APP_SERVICES:
        env = service(compose, name)["environment"]
        names = {key for key in env if key.startswith("PAGEMILL_")}
        assert names - known == set(), f"{name}: unknown settings {sorted(names - known)}"
        assert env["PAGEMILL_DATABASE_URL"].startswith("postgresql+psycopg://pagemill:${")
        assert env["PAGEMILL_DATABASE_URL"].endswith("@postgres:5432/pagemill")
        assert env["PAGEMILL_BROKER_URL"] == "redis://redis:6379/0"
        assert env["PAGEMILL_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_dockerfile() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build"), "multi-stage: build, runtime"
    for package in ("tesseract-ocr", "tesseract-ocr-deu", "tesseract-ocr-fra", "tesseract-ocr-nld"):
        assert package in text
    assert "--require-hashes --no-deps" in text and "requirements/runtime.lock" in text
    assert "COPY --from=build /opt/pagemill /opt/pagemill" in text
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    users = [line.split(None, 1)[1] for line in lines if line.startswith("USER ")]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


# --- docker-compose itself ---------------------------------------------------------------------


def run_compose(
    tmp_path: Path, *args: str, secrets: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (`make test` installs it); YAML checked only")
    env_file = tmp_path / "empty.env"  # ignore a developer's .env
    env_file.write_text("", encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAGEMILL_", "MINIO_", "COMPOSE_", "DOCKER_", "POSTGRES_", "GRAFANA_"))
    }
    env.update(secrets)
    return subprocess.run(
        [binary, "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


SECRETS = {name: f"test-{name.lower().replace('_', '-')}" for name in REQUIRED_SECRETS}


def test_docker_compose_config_is_valid(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", "-q", secrets=SECRETS)
    assert done.returncode == 0, done.stderr


def test_docker_compose_config_resolves(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", secrets=SECRETS)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == SERVICES
    intake = resolved["services"]["intake"]
    assert intake["environment"]["PAGEMILL_WEBHOOK_SECRET"] == SECRETS["PAGEMILL_WEBHOOK_SECRET"]
    assert intake["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    minio_env = resolved["services"]["minio"]["environment"]
    assert (
        minio_env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_PAGEMILL"] == SECRETS["PAGEMILL_WEBHOOK_SECRET"]
    )
    database_url = resolved["services"]["worker-extract"]["environment"]["PAGEMILL_DATABASE_URL"]
    assert f":{SECRETS['POSTGRES_PASSWORD']}@postgres:5432/" in database_url
    web_env = resolved["services"]["web"]["environment"]
    assert web_env["PAGEMILL_WEB_TOKEN"] == SECRETS["PAGEMILL_WEB_TOKEN"]


@pytest.mark.parametrize("missing", sorted(REQUIRED_SECRETS))
def test_docker_compose_requires_every_secret(tmp_path: Path, missing: str) -> None:
    secrets = {k: v for k, v in SECRETS.items() if k != missing}
    done = run_compose(tmp_path, "config", "-q", secrets=secrets)
    assert done.returncode != 0
    assert missing in done.stderr
