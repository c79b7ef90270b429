"""Worker warm-up: collaborators built at process start, in the process that runs the tasks,
and a failure that is logged there and then raised by the first task as before."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

from pipeline.errors import ErrorCategory, PermanentError
from pipeline.settings import get_settings
from workers import app as worker_app
from workers import queues, runtime


@pytest.fixture
def fresh_collaborators() -> Iterator[None]:
    runtime._build_collaborators.cache_clear()
    yield
    runtime._build_collaborators.cache_clear()


def test_warm_up_builds_the_collaborators_once(
    engine: Engine, fresh_collaborators: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str | None] = []
    from pipeline.extractors import build_extractor as real

    def counting(settings: Any, name: str | None = None) -> Any:
        built.append(name)
        return real(settings, name)

    monkeypatch.setattr(runtime, "build_extractor", counting)

    assert runtime.warm_up() is True

    deps = runtime.collaborators()
    deps.extractor_for(get_settings().default_provider)
    assert built == [get_settings().default_provider]  # the task reuses what warm-up built


def test_warm_up_failure_is_logged_and_the_first_task_fails_loudly(
    fresh_collaborators: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[str | None] = []

    def broken(settings: Any, name: str | None = None) -> Any:
        attempts.append(name)
        raise PermanentError(ErrorCategory.CONFIGURATION, "the provider needs an API key")

    monkeypatch.setattr(runtime, "build_extractor", broken)

    with caplog.at_level("ERROR", logger="workers.runtime"):
        assert runtime.warm_up() is False

    assert "warm-up failed" in caplog.text
    assert "the provider needs an API key" in caplog.text  # with the traceback
    with pytest.raises(PermanentError, match="API key"):
        runtime.collaborators().extractor_for(get_settings().default_provider)
    assert len(attempts) == 2  # nothing failed was cached: the task tried again


def test_concurrent_first_tasks_share_one_build(
    fresh_collaborators: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from pipeline.db.session import make_engine as real_make_engine

    engines: list[object] = []

    def slow_make_engine(url: str, **kwargs: Any) -> Any:
        time.sleep(0.2)  # long enough for every thread to arrive during the build
        engine = real_make_engine(url, **kwargs)
        engines.append(engine)
        return engine

    monkeypatch.setattr(runtime, "make_engine", slow_make_engine)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(runtime.collaborators())) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(engines) == 1
    assert len({id(r) for r in results}) == 1


def test_sdk_import_failure_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        runtime, "get_settings", lambda: SimpleNamespace(default_provider="anthropic")
    )
    monkeypatch.setattr(runtime, "sdk_module", lambda name: "pagemill_no_such_sdk")

    with caplog.at_level("ERROR", logger="workers.runtime"):
        runtime.import_provider_sdk()

    assert "importing the anthropic SDK failed" in caplog.text


# --- which process warms up --------------------------------------------------------------------


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def warm_up() -> bool:
        calls.append("warm_up")
        return True

    monkeypatch.setattr(runtime, "warm_up", warm_up)
    monkeypatch.setattr(runtime, "import_provider_sdk", lambda: calls.append("sdk"))
    monkeypatch.setattr(worker_app, "_main_process", {})
    return calls


def _worker(consumed: tuple[str, ...]) -> Any:
    return SimpleNamespace(
        app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=consumed)))
    )


def test_main_process_imports_the_sdk_before_fork_only_for_the_extract_queue(
    recorded: list[str],
) -> None:
    worker_app._before_pool_start(instance=_worker((queues.PREPARE, queues.MAINTENANCE)))
    assert recorded == []
    worker_app._before_pool_start(instance=_worker((queues.EXTRACT,)))
    assert recorded == ["sdk"]  # modules only; no collaborators before the fork


def test_prefork_children_warm_up_and_the_main_process_does_not(recorded: list[str]) -> None:
    from celery.concurrency.prefork import TaskPool as PreforkPool

    worker_app._before_pool_start(instance=_worker((queues.PREPARE,)))
    worker_app._in_main_process(sender=SimpleNamespace(pool=object.__new__(PreforkPool)))
    assert recorded == []

    worker_app._main_process["pid"] = os.getpid() + 1  # as seen from a forked child
    worker_app._in_pool_process(sender="celery@test")
    assert recorded == ["warm_up"]


def test_threads_and_solo_pools_warm_up_in_the_main_process_when_ready(
    recorded: list[str],
) -> None:
    from celery.concurrency.solo import TaskPool as SoloPool
    from celery.concurrency.thread import TaskPool as ThreadPool

    worker_app._before_pool_start(instance=_worker((queues.PREPARE,)))
    # The solo pool sends worker_process_init in the main process, before beat forks.
    worker_app._in_pool_process(sender="celery@test")
    assert recorded == []

    worker_app._in_main_process(sender=SimpleNamespace(pool=object.__new__(ThreadPool)))
    worker_app._in_main_process(sender=SimpleNamespace(pool=object.__new__(SoloPool)))
    assert recorded == ["warm_up", "warm_up"]


def test_each_remote_provider_names_the_sdk_a_worker_imports_at_start() -> None:
    from pipeline.extractors import sdk_module

    assert sdk_module("anthropic") == "anthropic"
    assert sdk_module("openai_compat") == "openai"
    assert sdk_module("local") is None  # nothing slow to import
