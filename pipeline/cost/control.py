"""Cost control for one document: what the extract stage consults before and after each call.

`CostServices` is built once per worker process (prices, estimator, circuit breaker, prompt
cache activity, parsed settings); `CostServices.for_document` makes the `DocumentCost` that one
extraction runs with. In order, a call is: answered from the page cache, or from a batch
result; held back by the document's own budget (→ review), by a spending cap or an open
circuit without a secondary (→ the document waits); rerouted to a failover secondary; marked
for prompt caching where that pays. After it: the circuit learns how it went, the estimator how
long answers are, and the call's row what each saving kept off the bill.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.checks import RuleFailure
from pipeline.cost import batch as batches
from pipeline.cost import budget, config, page_cache
from pipeline.cost.batch_api import BatchCapable
from pipeline.cost.chunks import (
    AnsweredChunk,
    EscalationStore,
    best_effort,
    failing_pages,
    mark_cascade_overhead,
    store_answer,
)
from pipeline.cost.circuit import CLOSED, CircuitBreaker, MemoryCircuitBreaker, Verdict, is_outage
from pipeline.cost.estimate import Estimator, prefix_tokens
from pipeline.cost.hooks import AwaitingBatch, CallPlan, ProviderHeld
from pipeline.cost.prompt_cache import MemoryActivity, PrefixActivity, prompt_cache_saving
from pipeline.cost.prompt_cache import worth_marking as prompt_cache_pays
from pipeline.costing import PriceTable
from pipeline.db import repository as repo
from pipeline.db.models import Document
from pipeline.db.session import transaction
from pipeline.domain import (
    CallOutcome,
    CallPurpose,
    CallRecord,
    ExtractionRequest,
    ExtractionResult,
    ObjectRef,
    PageContent,
    PageRenderer,
    ProviderReply,
    Savings,
    Usage,
)
from pipeline.extractors.base import Extractor
from pipeline.schemas import SchemaSpec
from pipeline.settings import Settings
from pipeline.usecases.extract import ChunkStore, ExtractOptions, Meter, extract_pages

log = logging.getLogger(__name__)

ChunkLoader = Callable[[], Iterable[list[PageContent]]]


class CostServices:
    """Per process: built once, shared by every document's `DocumentCost`."""

    def __init__(
        self,
        settings: Settings,
        prices: PriceTable,
        sessions: sessionmaker[Session],
        *,
        circuit: CircuitBreaker | None = None,
        activity: PrefixActivity | None = None,
    ) -> None:
        self.settings = settings
        self.prices = prices
        self.sessions = sessions
        self.estimator = Estimator(prices)
        self.circuit = circuit or MemoryCircuitBreaker(
            failure_threshold=settings.circuit_failures, open_s=settings.circuit_open_s
        )
        self.activity = activity or MemoryActivity()
        self.cascades = config.parse_cascade(settings.cascade)
        self.failover = config.parse_failover(settings.failover)
        self.batch_routes = config.parse_batch_routes(settings.batch_routes)
        self.cache_off = {s.strip() for s in settings.page_cache_off.split(",") if s.strip()}
        self._copies: dict[tuple[int, str], Extractor] = {}
        self._lock = threading.Lock()

    def with_model(self, extractor: Extractor, model: str) -> Extractor:
        """The same provider's extractor calling `model` (sharing its client)."""
        if extractor.model == model:
            return extractor
        with self._lock:
            key = (id(extractor), model)
            found = self._copies.get(key)
            if found is None:
                found = copy.copy(extractor)
                found.model = model
                self._copies[key] = found
            return found

    def page_cache_on(self, schema: SchemaSpec) -> bool:
        return self.settings.page_cache and schema.name not in self.cache_off

    def document_budget(self, page_count: int, spent: tuple[Decimal, int]) -> budget.DocumentBudget:
        s = self.settings
        pages = max(page_count, 1)
        usd = [
            v
            for v in (s.page_budget_usd and s.page_budget_usd * pages, s.document_budget_usd)
            if v is not None
        ]
        tokens = [
            v
            for v in (
                s.page_budget_tokens and s.page_budget_tokens * pages,
                s.document_budget_tokens,
            )
            if v is not None
        ]
        return budget.DocumentBudget(
            usd=min(usd) if usd else None,
            tokens=min(tokens) if tokens else None,
            spent_usd=spent[0],
            spent_tokens=spent[1],
        )

    def for_document(
        self,
        document_id: int,
        schema: SchemaSpec,
        page_count: int,
        extractor_for: Callable[[str], Extractor],
        load_chunks: ChunkLoader | None = None,
    ) -> DocumentCost:
        with self.sessions() as session:
            bucket, key, priority = session.execute(
                select(Document.bucket, Document.key, Document.priority).where(
                    Document.id == document_id
                )
            ).one()
            spent = budget.spent_before(session, document_id)
        ref = ObjectRef(bucket=bucket, key=key)
        # Object metadata decides (batch or urgent); else the key prefix routes.
        is_batch = priority == "batch" or (
            priority != "urgent" and config.is_batch_route(self.batch_routes, ref)
        )
        return DocumentCost(
            services=self,
            document_id=document_id,
            url=budget.object_url(bucket, key),
            schema=schema,
            page_count=page_count,
            batch=is_batch,
            budget=self.document_budget(page_count, spent),
            extractor_for=extractor_for,
            load_chunks=load_chunks,
        )


@dataclass
class DocumentCost:
    """The CostHooks of one document's extraction (see pipeline.cost.hooks)."""

    services: CostServices
    document_id: int
    url: str
    schema: SchemaSpec
    page_count: int
    batch: bool
    budget: budget.DocumentBudget
    extractor_for: Callable[[str], Extractor]
    load_chunks: ChunkLoader | None = None
    chunks: list[AnsweredChunk] = field(default_factory=list)
    settled: bool = False  # the whole answer came checked from the page cache
    # The extraction's chunk checkpoints (a retry resumes from them; so does the cascade).
    checkpoints: ChunkStore | None = None
    _escalating: bool = False
    _ordinals: Counter[tuple[str, tuple[int, ...]]] = field(default_factory=Counter)

    # -- models ------------------------------------------------------------------------------

    @property
    def cascade(self) -> tuple[str, ...]:
        return config.cascade_for(self.services.cascades, self.schema.name)

    def first_extractor(self, extractor: Extractor) -> Extractor:
        """The extractor the document starts with: the cascade's cheapest model, if any."""
        models = self.cascade
        return self.services.with_model(extractor, models[0]) if models else extractor

    def _plan_label(self, extractor: Extractor) -> str:
        return ">".join(self.cascade) if self.cascade else extractor.model

    def _prompt_key(self, extractor: Extractor) -> str:
        return f"{extractor.provider}:{extractor.model}:{self.schema.name}:{self.schema.version}"

    # -- page cache ---------------------------------------------------------------------------

    def cached_chunk(
        self, extractor: Extractor, schema: SchemaSpec, pages: list[PageContent], meter: Meter
    ) -> dict[str, Any] | None:
        indexes = tuple(p.index for p in pages)
        if self._escalating or not self.services.page_cache_on(schema):
            return None
        key = page_cache.chunk_key(
            pages, schema, self._plan_label(extractor), page_cache.PROMPT_VERSION
        )
        with transaction(self.services.sessions) as session:
            hit = page_cache.lookup(session, key)
            if hit is not None and hit.source_document_id != self.document_id:
                page_cache.count_hit(session, key)
        if hit is None:
            return None
        if hit.source_document_id == self.document_id:
            # This document stored it on an earlier attempt (it waited, or a later call
            # failed): a checkpoint, not a saving; no row, nothing paid twice.
            at = len(meter.calls)
            self.chunks.append(AnsweredChunk(indexes, hit.data, at, at, key, hit.model))
            return hit.data
        meter.calls.append(
            CallRecord(
                provider=extractor.provider,
                model=extractor.model,
                attempt=len(meter.calls) + 1,
                outcome=CallOutcome.OK,
                latency_ms=0,
                usage=Usage(),
                cost_usd=Decimal(0),
                page_indexes=list(indexes),
                purpose=CallPurpose.CACHE_HIT,
                cached_from_call_id=hit.source_call_id,
                savings=Savings(page_cache=hit.cost_usd or Decimal(0)),
            )
        )
        at = len(meter.calls)
        self.chunks.append(AnsweredChunk(indexes, hit.data, at - 1, at))
        self.settled = hit.final and self.page_count == len(indexes)
        return hit.data

    def chunk_done(
        self,
        extractor: Extractor,
        schema: SchemaSpec,
        pages: list[PageContent],
        data: dict[str, Any],
        meter: Meter,
        first_call: int,
    ) -> None:
        chunk = AnsweredChunk(tuple(p.index for p in pages), data, first_call, len(meter.calls))
        if self.services.page_cache_on(schema):
            chunk.label = self._plan_label(extractor)
            chunk.key = page_cache.chunk_key(pages, schema, chunk.label, page_cache.PROMPT_VERSION)
            store_answer(
                self.services.sessions,
                self.schema,
                self.document_id,
                chunk,
                data,
                meter.calls[first_call:],
                final=False,
            )
        self.chunks.append(chunk)

    def document_done(self, result: ExtractionResult, meter: Meter) -> None:
        """A single-chunk document's checked answer replaces its chunk's cache entry."""
        if self.settled or not result.valid or result.data is None or len(self.chunks) != 1:
            return
        store_answer(
            self.services.sessions,
            self.schema,
            self.document_id,
            self.chunks[0],
            result.data,
            meter.calls,
            final=True,
        )

    # -- before and after a call --------------------------------------------------------------

    def plan(
        self,
        extractor: Extractor,
        request: ExtractionRequest,
        purpose: CallPurpose,
        page_indexes: list[int],
        meter: Meter,
    ) -> CallPlan:
        if self._escalating and purpose is CallPurpose.EXTRACT:
            purpose = CallPurpose.ESCALATE
        if self.batch and isinstance(extractor, BatchCapable):
            return self._batch_plan(extractor, extractor, request, purpose, page_indexes, meter)
        services = self.services
        estimate = services.estimator.estimate(
            extractor.provider,
            extractor.model,
            request.schema,
            request.pages,
            feedback=request.feedback,
            max_tokens=request.max_tokens,
        )
        budget.check_document(self.budget, meter.calls, estimate.cost_usd, estimate.tokens)
        chosen = self._route(extractor)
        if chosen is not extractor:
            estimate = services.estimator.estimate(
                chosen.provider,
                chosen.model,
                request.schema,
                request.pages,
                feedback=request.feedback,
                max_tokens=request.max_tokens,
            )
        mark = False
        if services.settings.prompt_cache:
            key = self._prompt_key(chosen)
            mark = prompt_cache_pays(
                services.prices.price_for(chosen.provider, chosen.model),
                prefix_tokens(request.schema),
                services.activity.recent_calls(key),
                services.activity.warm(key),
            )
        if mark != request.cache_prefix:
            request = dataclasses.replace(request, cache_prefix=mark)
        return CallPlan(chosen, request, estimate, purpose=purpose)

    def _route(self, extractor: Extractor) -> Extractor:
        """The primary while its circuit lets calls through (or a probe is due), else the
        configured secondary (when its own circuit does), else the document waits."""
        circuit = self.services.circuit
        verdict = circuit.peek(extractor.provider, extractor.model)
        if verdict.allowed:
            return extractor
        target = config.failover_for(self.services.failover, extractor.provider, extractor.model)
        if target is not None:
            secondary = self.extractor_for(target.provider)
            if target.model:
                secondary = self.services.with_model(secondary, target.model)
            if circuit.peek(secondary.provider, secondary.model).allowed:
                return secondary
        raise self._held(extractor.provider, extractor.model, verdict, target)

    def _held(
        self, provider: str, model: str, verdict: Verdict, target: config.Target | None = None
    ) -> ProviderHeld:
        # Spread the returns so that held documents do not all come back at the same instant.
        until = (verdict.retry_at or datetime.now(UTC)) + timedelta(
            seconds=random.uniform(0, self.services.settings.circuit_open_s / 2)
        )
        return ProviderHeld(
            f"{provider}:{model} is failing (circuit {verdict.state})"
            + ("" if target is None else f" and so is its secondary {target.label}")
            + "; the document waits for it to recover",
            until=until,
        )

    def _batch_plan(
        self,
        extractor: Extractor,
        batch_api: BatchCapable,
        request: ExtractionRequest,
        purpose: CallPurpose,
        page_indexes: list[int],
        meter: Meter,
    ) -> CallPlan:
        ordinal_key = (purpose.value, tuple(page_indexes))
        ordinal = self._ordinals[ordinal_key]
        self._ordinals[ordinal_key] += 1
        key = batches.call_key(purpose, page_indexes, ordinal)
        with transaction(self.services.sessions) as session:
            row = batches.find(session, self.document_id, key)
            if row is not None and row.status == batches.SUCCEEDED:
                return CallPlan(
                    extractor, request, purpose=purpose, answered=batches.answer_of(session, row)
                )
            if row is not None and row.status == batches.FAILED:
                raise batches.failure_of(row)
            if row is None:
                estimate = self.services.estimator.estimate(
                    extractor.provider,
                    extractor.model,
                    request.schema,
                    request.pages,
                    feedback=request.feedback,
                    max_tokens=request.max_tokens,
                    batch=True,
                )
                budget.check_document(self.budget, meter.calls, estimate.cost_usd, estimate.tokens)
                batches.queue(
                    session,
                    document_id=self.document_id,
                    key=key,
                    extractor=batch_api,
                    request=request,
                    purpose=purpose,
                    page_indexes=page_indexes,
                    estimated_input_tokens=estimate.input_tokens,
                    estimated_cost_usd=estimate.cost_usd,
                )
        raise AwaitingBatch(f"call {key} goes through the {extractor.provider} batch API")

    def start_call(self, record: CallRecord) -> None:
        """Right before the request goes out: the circuit's say (a probe is taken here, so no
        call that does not happen holds it), then the `started` row in the same transaction
        as the charge to every spending cap that applies (raises BudgetExceeded: no row, no
        call)."""
        verdict = self.services.circuit.allow(record.provider, record.model)
        if not verdict.allowed:  # another worker's probe is under way, or it just failed
            raise self._held(record.provider, record.model, verdict)
        with transaction(self.services.sessions) as session:
            record.budget_ledger_ids = budget.charge_caps(
                session,
                self.url,
                record.estimated_cost_usd,
                recheck_s=self.services.settings.budget_recheck_s,
            )
            repo.record_calls(session, self.document_id, [record])

    def settle(self, plan: CallPlan, record: CallRecord, reply: ProviderReply | None) -> None:
        services = self.services
        if reply is None and record.error_category is not None and is_outage(record.error_category):
            services.circuit.failure(record.provider, record.model)
            return
        # Any answer, a refusal or a 429 included, shows the provider is up.
        if services.circuit.success(record.provider, record.model) != CLOSED:
            self._wake_held()
        if reply is None:
            return
        services.estimator.learn(record.model, self.schema, reply.usage.output_tokens)
        services.activity.note(self._prompt_key(plan.extractor), record.prompt_cache_marked)
        price = services.prices.price_for(record.provider, record.model)
        if price is not None and record.cost_usd is not None:
            record.savings.prompt_cache = prompt_cache_saving(price, reply.usage)
        models = self.cascade
        if (
            models
            and record.model in models[:-1]
            and record.purpose is not CallPurpose.ESCALATE
            and record.cost_usd is not None
        ):
            strong = services.prices.cost(record.provider, models[-1], reply.usage)
            if strong is not None:
                record.savings.cascade = strong - record.cost_usd

    def _wake_held(self) -> None:
        """The circuit closed: documents held for it are due now (the sweep resumes them)."""
        from pipeline.cost.waiting import PROVIDER_DOWN
        from pipeline.usecases.waiting import wake

        woken = 0
        with best_effort("waking held documents"), transaction(self.services.sessions) as session:
            woken = wake(session, [PROVIDER_DOWN])
        if woken:
            log.info("circuit closed: %d held document(s) resume", woken)

    # -- cascade ------------------------------------------------------------------------------

    def escalate(
        self,
        extractor: Extractor,
        result: ExtractionResult,
        failures: list[RuleFailure],
        grounding: dict[str, Any],
        ungrounded: list[str],
        renderer: PageRenderer,
        meter: Meter,
        options: ExtractOptions,
    ) -> tuple[ExtractionResult, Extractor] | None:
        """Re-extract, with the cascade's next model, the chunks whose values broke a rule or
        were not found on the page; chunks that passed keep their answers. None when there is
        no stronger model (or the answer came checked from the cache)."""
        models = self.cascade
        if self.settled or not models or extractor.model not in models[:-1]:
            return None
        if self.load_chunks is None:
            return None
        stronger = self.services.with_model(extractor, models[models.index(extractor.model) + 1])
        failing = failing_pages(failures, grounding, ungrounded)
        escalated = [c for c in self.chunks if failing is None or set(c.indexes) & failing]
        # The cheap answers of escalated chunks saved nothing: they were paid on top.
        overhead = [
            call
            for c in escalated
            for call in meter.calls[c.first_call : c.last_call]
            if call.purpose is not CallPurpose.CACHE_HIT
        ]
        for call in overhead:
            call.savings.cascade = -(call.cost_usd or Decimal(0))
        mark_cascade_overhead(self.services.sessions, overhead)
        log.info(
            "document %s: escalating %s to %s",
            self.document_id,
            "every page" if failing is None else f"page(s) {sorted(p + 1 for p in failing)}",
            stronger.model,
        )
        kept = {
            (c.indexes[0], c.indexes[-1] + 1): c.data
            for c in self.chunks
            if c not in escalated and c.indexes
        }
        store = EscalationStore(self.checkpoints, failing, kept)
        previous = self.chunks
        self.chunks, self._escalating = [], True
        try:
            again = extract_pages(
                stronger,
                self.schema,
                self.load_chunks(),
                renderer,
                self.services.prices,
                meter,
                options,
                store,
            )
        except BaseException:
            self.chunks = previous
            raise
        finally:
            self._escalating = False
        return again, stronger
