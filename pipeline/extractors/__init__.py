"""Extractor registry: each provider is one module here that registers a factory by name."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from pipeline.errors import ErrorCategory, PermanentError
from pipeline.extractors.base import Extractor
from pipeline.settings import Settings

ExtractorFactory = Callable[[Settings], Extractor]

_FACTORIES: dict[str, ExtractorFactory] = {}
_SDKS: dict[str, str] = {}


def register(
    name: str, *, sdk: str | None = None
) -> Callable[[ExtractorFactory], ExtractorFactory]:
    """Decorator for a provider module's factory: `@register("anthropic", sdk="anthropic")`.
    `sdk` names the module the provider imports lazily, so a worker can import it at start."""

    def wrap(factory: ExtractorFactory) -> ExtractorFactory:
        _FACTORIES[name] = factory
        if sdk:
            _SDKS[name] = sdk
        return factory

    return wrap


def _discover() -> None:
    # Adding a provider is adding a module to this package; nothing else names it.
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "common"):
            importlib.import_module(f"{__name__}.{info.name}")


def provider_names() -> list[str]:
    _discover()
    return sorted(_FACTORIES)


def sdk_module(name: str) -> str | None:
    """The module the named provider imports on its first call, if any (slow to import)."""
    _discover()
    return _SDKS.get(name)


def build_extractor(settings: Settings, name: str | None = None) -> Extractor:
    """Build the named provider's extractor (default: settings.default_provider)."""
    _discover()
    chosen = name or settings.default_provider
    factory = _FACTORIES.get(chosen)
    if factory is None:
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            f"unknown provider {chosen!r} (known: {', '.join(sorted(_FACTORIES))})",
        )
    return factory(settings)
