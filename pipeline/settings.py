"""Settings: the one place that reads the environment (prefix PAGEMILL_, optional .env)."""

from __future__ import annotations

import json
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SettingsError(RuntimeError):
    """Raised at start-up when a setting has a bad value; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAGEMILL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Services. Defaults point at services on this machine.
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/pagemill"
    broker_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    sqs_queue_url: str | None = None
    sqs_wait_seconds: Annotated[int, Field(ge=0, le=20)] = 10

    # Extraction.
    provider: str | None = None  # None: anthropic when a key is set, else local.
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    # Sonnet 4.5 leaves the SDK's table on 2026-11-30; keep the id here, not in code.
    anthropic_model: str = "claude-sonnet-4-6"
    anthropic_max_tokens: Annotated[int, Field(ge=256, le=64000)] = 4096
    anthropic_timeout_s: Annotated[float, Field(gt=0, le=600)] = 120.0
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_api_key: SecretStr | None = None
    # A current open-weight model (Qwen2-VL still works; on document benchmarks it is far
    # behind its successors). See the README's "Self-hosted models" section.
    openai_model: str = "Qwen/Qwen3-VL-8B-Instruct"
    # Pixels per page image at most (None: as rendered, PAGEMILL_IMAGE_LONG_EDGE_PX). Known
    # model families (Qwen2/2.5/3-VL) get images sized as their processor would size them.
    openai_max_pixels: Annotated[int | None, Field(ge=3136)] = None
    openai_timeout_s: Annotated[float, Field(gt=0, le=600)] = 120.0
    schema_name: str = "invoice"  # the default schema for new documents
    # User schemas: "pkg.module:Model" or JSON Schema file paths, comma-separated or a JSON list.
    user_schemas: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Which schema a new object gets, e.g. "receipts/=receipt;s3://ap/*=invoice;*=invoice".
    # Object metadata x-amz-meta-pagemill-schema wins, then the longest prefix, then schema_name.
    schema_routes: str = ""
    schema_from_metadata: bool = True  # one HEAD request per event to read the metadata
    price_table: Path | None = None
    max_pages: Annotated[int, Field(ge=1)] = 200
    max_file_bytes: Annotated[int, Field(ge=1)] = 100 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=1)] = 60_000_000
    pages_per_call: Annotated[int, Field(ge=1, le=100)] = 20
    image_long_edge_px: Annotated[int, Field(ge=256, le=8000)] = 1568
    # OCR for the offline extractor: it reads every value off the page, accuracy first.
    ocr_dpi: Annotated[int, Field(ge=72, le=600)] = 300
    ocr_languages: str = "eng+deu+fra+nld"  # Tesseract language codes joined by "+"
    # OCR for grounding a model's answer: the values are known and only have to be found, so
    # about the model's own resolution (the page's image is reused when it is at least 85% of
    # this; the OCR then scales it by the size of the printed text).
    ocr_grounding_dpi: Annotated[int, Field(ge=72, le=600)] = 150
    ocr_grounding_languages: str = "eng+deu+fra+nld"
    ocr_tessdata_dir: str | None = None  # default: the distribution's tessdata folder
    # Tesseract threads per page; 1 when every core already has a worker process.
    ocr_strips: Annotated[int, Field(ge=1, le=8)] = 1
    max_reasks: Annotated[int, Field(ge=0, le=5)] = 1
    max_rechecks: Annotated[int, Field(ge=0, le=3)] = 1
    # OCR pages without a text layer even when a model extracts them, to ground its answer.
    ocr_scanned_pages: bool = True

    # Global rate limits shared by every worker through Redis, e.g.
    # "anthropic:claude-sonnet-4-6=rpm:50,itpm:30000,otpm:8000,inflight:8;
    #  openai_compat:*=inflight:64"
    rate_limits: str = ""
    rate_limit_redis_url: str | None = None  # default: the broker's Redis
    rate_limit_max_wait_s: Annotated[float, Field(ge=0)] = 30.0
    # A permit held by a crashed worker frees itself after this; keep it just above the
    # provider timeout so a live call never loses its slot and a dead one soon gives it back.
    rate_limit_lease_s: Annotated[float, Field(gt=0)] = 150.0

    # Workers and retries.
    # Failures of the document itself (not outages): retried this many times with backoff.
    task_max_retries: Annotated[int, Field(ge=0, le=50)] = 6
    retry_base_s: Annotated[float, Field(gt=0)] = 2.0
    retry_cap_s: Annotated[float, Field(gt=0)] = 120.0
    # Outages (database, broker, object store, provider down or rate-limiting): a document waits
    # in Postgres, trying again at most this far apart, for as long as the outage lasts...
    wait_cap_s: Annotated[float, Field(gt=0)] = 300.0
    # ... up to this long in one run of waits (then it is dead-lettered: an "outage" that only
    # this document sees for days is the document's problem). 0: wait forever.
    max_wait_s: Annotated[float, Field(ge=0)] = 3 * 24 * 3600.0
    task_time_limit_s: Annotated[int, Field(ge=10)] = 900
    visibility_timeout_s: Annotated[int, Field(ge=60)] = 3600
    # How long a worker holds a document; past it, the sweep gives the work to another worker.
    lease_s: Annotated[int, Field(ge=5)] = 960
    stuck_after_s: Annotated[int, Field(ge=10)] = 1800
    sweep_interval_s: Annotated[float, Field(gt=0)] = 60.0
    # Page images (page_payloads) are kept this long after a document is final (the review page
    # shows them), then deleted by the beat; 0 deletes them as soon as the document is final.
    payload_retention_days: Annotated[float, Field(ge=0)] = 30.0
    retention_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    reconcile_buckets: list[str] = Field(default_factory=list)
    reconcile_interval_s: Annotated[float, Field(gt=0)] = 900.0
    worker_concurrency: Annotated[int, Field(ge=1, le=1000)] = 2
    # A prefork process is replaced after this many tasks (unset: never); bounds the memory a
    # long-lived process keeps after large renders.
    worker_max_tasks_per_child: Annotated[int | None, Field(ge=1)] = None
    # The bare `pagemill worker` runs one worker per stage: prefork processes for the CPU stage
    # (unset: one per core) and threads for model calls (calls in flight, per process).
    prepare_concurrency: Annotated[int | None, Field(ge=1, le=256)] = None
    extract_concurrency: Annotated[int, Field(ge=1, le=1000)] = 64

    # Cost control (pipeline/cost; README "Cost"). A document may spend page_budget_* per page
    # (capped by document_budget_* when set), re-asks, re-checks and retries included; past it
    # it goes to review instead of calling again.
    page_budget_usd: Annotated[Decimal | None, Field(ge=0)] = Decimal("0.10")
    page_budget_tokens: Annotated[int | None, Field(ge=0)] = 30_000
    document_budget_usd: Annotated[Decimal | None, Field(ge=0)] = None
    document_budget_tokens: Annotated[int | None, Field(ge=0)] = None
    # A document held by a spending cap checks again this often (a cap raised with
    # `pagemill budget set` wakes it at once; the period's rollover at the latest).
    budget_recheck_s: Annotated[float, Field(gt=0)] = 300.0
    page_cache: bool = True  # reuse the answer for identical pages (re-uploads)
    page_cache_off: str = ""  # schemas that never use the page cache, comma-separated
    # Cheap model first, stronger ones only for pages that fail rules or grounding, e.g.
    # "invoice=claude-haiku-4-5>claude-sonnet-4-6;*=claude-haiku-4-5>claude-sonnet-4-6".
    cascade: str = ""
    prompt_cache: bool = True  # mark the fixed prefix for the provider's cache where it pays
    # Non-urgent objects go through the provider's batch API at a discount: key prefixes, e.g.
    # "archive/;s3://inbox/backfill/" (or object metadata x-amz-meta-pagemill-priority: batch).
    batch_routes: str = ""
    batch_max_requests: Annotated[int, Field(ge=1, le=100_000)] = 2000
    # A group is submitted when this many requests wait, or when the oldest waited this long.
    batch_min_requests: Annotated[int, Field(ge=1, le=100_000)] = 100
    batch_max_wait_s: Annotated[float, Field(ge=0)] = 300.0
    batch_poll_interval_s: Annotated[float, Field(gt=0)] = 60.0
    batch_max_attempts: Annotated[int, Field(ge=1, le=10)] = 3  # expiries/errors, then dead letter
    # Where calls go while a model's circuit is open, e.g.
    # "anthropic:claude-sonnet-4-6=openai_compat;anthropic:*=anthropic:claude-haiku-4-5".
    failover: str = ""
    circuit_failures: Annotated[int, Field(ge=1)] = 5  # consecutive outage errors to open
    # Before one probe call is let through (short: a probe is one call from one worker).
    circuit_open_s: Annotated[float, Field(gt=0)] = 5.0

    # Intake webhook (S3-compatible servers post bucket events here).
    webhook_host: str = "127.0.0.1"
    webhook_port: Annotated[int, Field(ge=0, le=65535)] = 8087
    webhook_secret: SecretStr | None = None

    # `pagemill web`: dashboard, webhook, health and metrics. Bound anywhere but a loopback
    # address it refuses to start without a token (sent as a Bearer header or typed once into
    # the login page).
    web_host: str = "127.0.0.1"
    web_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    web_token: SecretStr | None = None
    web_refresh_s: Annotated[int, Field(ge=0, le=3600)] = 15  # dashboard auto-refresh; 0 = off
    # How often the ops roll-up adds recent events and calls to the hourly tables the ops_*
    # views read (run by the beat and by `pagemill web`); 0 = never (the views stay right, and
    # get slower as the tables grow).
    ops_rollup_interval_s: Annotated[float, Field(ge=0)] = 300.0

    # Operations: Prometheus metrics and logs.
    # Workers, the launcher and the SQS intake serve /metrics on this port (0 = off). Every
    # process of a worker (prefork children included) records into one multiprocess directory
    # that the serving process owns: PAGEMILL_METRICS_DIR (emptied at start; one per serving
    # process) or, unset, a private temporary directory removed at exit.
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9808
    metrics_host: str = "127.0.0.1"
    metrics_dir: Path | None = None
    # How long a scrape reuses queue depths (Redis) and the oldest pending age (Postgres).
    metrics_cache_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    # "text" for people, "json" for log pipelines: one object per line, with document id,
    # task id, stage and provider request id where known.
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgresql+psycopg://")):
            raise ValueError("must be a postgresql:// or postgresql+psycopg:// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("user_schemas", mode="before")
    @classmethod
    def _split_user_schemas(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("schema_routes")
    @classmethod
    def _parse_schema_routes(cls, value: str) -> str:
        from pipeline.routing import parse_routes

        parse_routes(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("rate_limits")
    @classmethod
    def _parse_rate_limits(cls, value: str) -> str:
        from pipeline.ratelimit import parse_limits

        parse_limits(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("cascade", "failover", "batch_routes")
    @classmethod
    def _parse_cost_rules(cls, value: str, info: ValidationInfo) -> str:
        from pipeline.cost import config

        parser = {
            "cascade": config.parse_cascade,
            "failover": config.parse_failover,
            "batch_routes": config.parse_batch_routes,
        }[str(info.field_name)]
        parser(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("broker_url")
    @classmethod
    def _redis_only(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        return value

    @model_validator(mode="after")
    def _visibility_outlasts_tasks(self) -> Settings:
        # Redis hands an unacked message to another worker after the visibility timeout; if a
        # task (plus its retry wait) can outlast it, the same document runs twice at once.
        if self.lease_s <= self.task_time_limit_s:
            raise ValueError(
                f"lease_s ({self.lease_s}) must exceed task_time_limit_s ({self.task_time_limit_s})"
                ": a running task must never lose its document to another worker"
            )
        slowest_call = max(self.anthropic_timeout_s, self.openai_timeout_s)
        if self.rate_limits and self.rate_limit_lease_s <= slowest_call:
            raise ValueError(
                f"rate_limit_lease_s ({self.rate_limit_lease_s:g}) must exceed the provider "
                f"timeout ({slowest_call:g}): a slow call would lose its rate-limit slot"
            )
        longest = self.task_time_limit_s + self.retry_cap_s
        if self.visibility_timeout_s <= longest:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed "
                f"task_time_limit_s + retry_cap_s ({longest:g})"
            )
        return self

    @property
    def soft_time_limit_s(self) -> float:
        """When a task is asked to stop (SoftTimeLimitExceeded), ahead of the hard kill at
        task_time_limit_s: it has time to give its document back."""
        return max(self.task_time_limit_s - 30, self.task_time_limit_s * 0.8)

    @property
    def default_provider(self) -> str:
        if self.provider:
            return self.provider
        return "anthropic" if self.anthropic_api_key else "local"


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "PAGEMILL_" + "_".join(str(p) for p in err["loc"]).upper()
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
