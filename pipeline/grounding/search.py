"""Searching pages for values: exact, up to OCR look-alikes, token by token; what is kept of
each value's occurrences between chunks of pages, and the stream that drives it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

from pipeline.grounding.decision import Decider, Hit, Planner, Query
from pipeline.grounding.index import PageIndex, Span, label_distance
from pipeline.grounding.result import Grounding, HasWords
from pipeline.schemas.vocabulary import ValueKind as Kind
from pipeline.schemas.vocabulary import Vocabulary
from pipeline.text.amounts import CENTS
from pipeline.text.currency import CURRENCY_SIGNS, WORDLIKE_CODES
from pipeline.text.normalise import DIGIT_LOOKALIKES, alnum_key, digits, within_one_edit

_NUMBER_LABEL = re.compile(
    r"^(?:no|nr|n|num|number|nummer|numero|inv|invoice|rechnung(?:snr|snummer)?|facture"
    r"|factuur|fattura|factura|ref|beleg(?:nr)?|bill)$"
)

MAX_MATCHES = 12
_MAX_FUZZY_TOKENS = 40  # longer values must match exactly: the token search grows with length
_MAX_TOKEN_WORDS = 12  # occurrences per token followed in the token search
_SEARCH_BUDGET = 4000  # word visits per value: keeps a pathological value from costing time


class _Best:
    """Occurrences of a number or date outside line items: the lowest label distance wins, the
    first in reading order on a tie; kept for all occurrences and for those printed with cents."""

    def __init__(self) -> None:
        self.best: Hit | None = None
        self.best_cents: Hit | None = None

    def offer(self, hit: Hit) -> None:
        if self.best is None or (hit.dist, *hit.order) < (self.best.dist, *self.best.order):
            self.best = hit
        if hit.cents and (
            self.best_cents is None
            or (hit.dist, *hit.order) < (self.best_cents.dist, *self.best_cents.order)
        ):
            self.best_cents = hit

    def hits(self, cents_only: bool) -> list[Hit]:
        hit = self.best_cents if cents_only else self.best
        return [] if hit is None else [hit]

    def pages(self) -> set[int] | None:
        return {h.page for h in (self.best, self.best_cents) if h is not None}


class _All:
    """Occurrences inside line items: which one wins depends on the items before, so all stay
    (as small records, not pages)."""

    def __init__(self) -> None:
        self.found: list[Hit] = []

    def offer(self, hit: Hit) -> None:
        self.found.append(hit)

    def hits(self, cents_only: bool) -> list[Hit]:
        return [h for h in self.found if h.cents] if cents_only else self.found

    def pages(self) -> set[int] | None:
        return {h.page for h in self.found}


class _Text:
    """A text value's three tiers, each used only when the ones before found nothing on any
    page: exact, exact up to digit look-alikes, token by token. A later tier is searched only
    while the earlier ones have found nothing so far; at most MAX_MATCHES of each are kept."""

    def __init__(self, value: str, kind: Literal["text", "identifier"]) -> None:
        self.target = alnum_key(value)
        self.kind = kind
        self.tokens = [k for k in (alnum_key(t) for t in value.split()) if k]
        self.exact: list[Hit] = []
        self.folded: list[Hit] = []
        self.fuzzy: tuple[int, int, Hit] | None = None  # (missing, first rank, occurrence)
        self.fuzzy_done = not self.tokens or len(self.tokens) > _MAX_FUZZY_TOKENS

    def hits(self, cents_only: bool) -> list[Hit]:
        if self.exact or self.folded:
            return self.exact or self.folded
        return [] if self.fuzzy is None else [self.fuzzy[2]]

    def pages(self) -> set[int] | None:
        return {h.page for h in self.hits(False)}


class _Currency:
    """Words naming a currency, by code, else by sign. Outside line items only the first one
    and those on a page where the total may be are needed (the nearest to the total wins)."""

    def __init__(self, keep_all: bool) -> None:
        self.keep_all = keep_all
        self.by_code: list[Hit] = []
        self.by_sign: list[Hit] = []

    def hits(self, cents_only: bool) -> list[Hit]:
        return self.by_code or self.by_sign

    def pages(self) -> set[int] | None:
        return None

    def prune(self, watch: set[int] | None) -> None:
        if self.keep_all or watch is None:
            return
        if self.by_code:
            self.by_sign = []
        for name in ("by_code", "by_sign"):
            found: list[Hit] = getattr(self, name)
            if found:
                first = min(found, key=lambda h: h.order)
                setattr(self, name, [h for h in found if h is first or h.page in watch])


Store: TypeAlias = _Best | _All | _Text | _Currency


class GroundingStream:
    """Grounds one document's values against its pages delivered chunk by chunk, in page
    order: `add(pages)` for each chunk, then `result()`. Between chunks it keeps only the
    occurrences that can still be chosen, never the pages' words, so memory does not grow
    with the page count; the result is the one `ground` gives on all pages at once."""

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        vocabulary: Vocabulary | None = None,
        kinds: Mapping[str, Kind] | None = None,
    ) -> None:
        self._data = data
        self._vocabulary = vocabulary or Vocabulary()
        self._kinds = {**self._vocabulary.kinds, **(kinds or {})}
        # A dry run of the decisions lists every lookup they will make.
        planner = Decider(self._kinds, Planner())
        planner.walk(data, "")
        assert isinstance(planner.source, Planner)
        self._stores: dict[Query, Store] = {}
        for query in planner.source.queries:
            self._stores[query] = store_for(query)
        self._total = planner.total
        self._cents = False
        self._seq = 0

    @property
    def prints_cents(self) -> bool:
        return self._cents

    def add(self, pages: Iterable[HasWords]) -> None:
        chunk = [PageIndex(p.index, p.words, self._vocabulary.label_patterns) for p in pages]
        if not chunk:
            return
        if not self._cents:
            self._cents = any(CENTS.search(w.text) for page in chunk for w in page.words)
        for query, store in self._stores.items():
            self._search(query, store, chunk)
        watch = self._watch()
        for store in self._stores.values():
            if isinstance(store, _Currency):
                store.prune(watch)

    def hits(self, query: Query, cents_only: bool) -> list[Hit]:
        return self._stores[query].hits(cents_only)

    def result(self) -> Grounding:
        decider = Decider(self._kinds, self)
        decider.walk(self._data, "")
        return decider.result

    def _watch(self) -> set[int] | None:
        """Pages the total may end up on: a currency outside line items is taken near it."""
        if self._total is None:
            return set()
        return self._stores[self._total].pages()

    def _hit(self, page: PageIndex, span: Span, name: str | None, number: bool = False) -> Hit:
        self._seq += 1
        y0, y1 = page.span_y(span)
        hit = Hit(
            page=page.index,
            rank=page.rank[span[0]],
            span=span,
            loc=page.location(span),
            y0=y0,
            y1=y1,
            h=page.height(span),
            cents=page.has_cents(span),
            seq=self._seq,
        )
        if name is not None:
            hit.dist = label_distance(page, name, span, hit.loc)
        if number:
            line = page.line_of[span[0]]
            members = page.lines[line]
            hit.line, hit.line_y = line, page.line_y[line]
            hit.line_box = (*page.span_y(tuple(members)), page.height(tuple(members)))
            hit.x0 = page.words[span[0]].x0
            hit.col = page.column_rank(span)
        return hit

    def _search(self, query: Query, store: Store, chunk: list[PageIndex]) -> None:
        if query[0] == "num":
            assert isinstance(store, (_Best, _All))
            value, name = query[1], query[2]
            for page in chunk:
                index = page.amounts()
                spans = list(index.get(value, []))
                if value:  # credit notes and discounts print the sign either way
                    spans += index.get(-value, [])
                for span in spans:
                    store.offer(self._hit(page, span, name, number=True))
        elif query[0] == "date":
            assert isinstance(store, (_Best, _All))
            day, name = query[1], query[2]
            for page in chunk:
                for span in page.dates().get(day, []):
                    store.offer(self._hit(page, span, name))
        elif query[0] == "cur":
            assert isinstance(store, _Currency)
            code_hits, sign_hits = _currency_words(chunk, query[1])
            store.by_code += [self._hit(p, s, None) for p, s in code_hits]
            if not store.by_code or store.keep_all:
                store.by_sign += [self._hit(p, s, None) for p, s in sign_hits]
        else:
            assert isinstance(store, _Text)
            self._search_text(store, chunk, query[3])

    def _search_text(self, store: _Text, chunk: list[PageIndex], name: str | None) -> None:
        target, kind = store.target, store.kind
        if not target:
            return
        if len(store.exact) < MAX_MATCHES:
            out: list[tuple[PageIndex, Span]] = []
            for page in chunk:
                _Stream(page, target, kind, False, out, MAX_MATCHES - len(store.exact)).run()
            store.exact += [self._hit(p, s, name) for p, s in out]
        if store.exact:
            return
        if digits(target) and len(store.folded) < MAX_MATCHES:
            folded = target.translate(DIGIT_LOOKALIKES)
            out = []
            for page in chunk:
                _Stream(page, folded, kind, True, out, MAX_MATCHES - len(store.folded)).run()
            store.folded += [self._hit(p, s, name) for p, s in out]
        if store.folded or store.fuzzy_done:
            return
        for page in chunk:
            found = _fuzzy_page(page, store.tokens, kind)
            if found is not None and (store.fuzzy is None or found[:2] < store.fuzzy[:2]):
                store.fuzzy = (found[0], found[1], self._hit(page, found[2], name))
            if store.fuzzy is not None and store.fuzzy[0] == 0:
                store.fuzzy_done = True
                return


def store_for(query: Query) -> Store:
    if query[0] == "cur":
        return _Currency(keep_all=query[2])
    if query[0] == "text":
        return _Text(query[1], query[2])
    return _All() if query[2] is None else _Best()


def ground(
    data: Mapping[str, Any],
    pages: Sequence[HasWords],
    *,
    vocabulary: Vocabulary | None = None,
    kinds: Mapping[str, Kind] | None = None,
) -> Grounding:
    """Locate every non-null scalar of `data` in the pages' words.

    The kind of each field (how it is compared) comes from `kinds` (by field name, e.g.
    "amount"), else the schema's `vocabulary`, else the value's type and field name; the
    vocabulary's label words pick among several occurrences of one value.
    """
    return ground_chunks(data, [pages], vocabulary=vocabulary, kinds=kinds)


def ground_chunks(
    data: Mapping[str, Any],
    chunks: Iterable[Iterable[HasWords]],
    *,
    vocabulary: Vocabulary | None = None,
    kinds: Mapping[str, Kind] | None = None,
) -> Grounding:
    """`ground` over pages delivered chunk by chunk in page order; only one chunk's words are
    held at a time."""
    stream = GroundingStream(data, vocabulary=vocabulary, kinds=kinds)
    for chunk in chunks:
        stream.add(chunk)
    return stream.result()


def _currency_words(
    pages: list[PageIndex], code: str
) -> tuple[list[tuple[PageIndex, Span]], list[tuple[PageIndex, Span]]]:
    """Words naming the currency: by its code, and by its sign."""
    code_re = re.compile(rf"(?<![A-Za-z]){code}(?![A-Za-z])")
    lower = code.casefold()
    signs = CURRENCY_SIGNS.get(code, ())
    # Signs are found inside a word ("12,00€"), sign words only as the whole word.
    marks = [s for s in signs if not s.replace(".", "").isalpha()]
    names = {alnum_key(s) for s in signs if s not in marks}
    by_code: list[tuple[PageIndex, Span]] = []
    by_sign: list[tuple[PageIndex, Span]] = []
    for page in pages:
        for i, w in enumerate(page.words):
            text, key = w.text, page.keys[i]
            if (code in text and code_re.search(text)) or (
                key == lower and code not in WORDLIKE_CODES
            ):
                by_code.append((page, (i,)))
            elif any(m in text for m in marks) or (names and key.strip("0123456789") in names):
                by_sign.append((page, (i,)))
    return by_code, by_sign


def _fuzzy_page(page: PageIndex, tokens: list[str], kind: str) -> tuple[int, int, Span] | None:
    """Token by token with OCR slack; a long text may miss a fifth of its tokens, as long as
    the ones found follow each other closely in reading order. The page's best chain as
    (tokens missing, rank of its first word, words)."""
    n = len(tokens)
    allowed = n - math.ceil(0.8 * n) if kind == "text" and n >= 5 else 0
    best: tuple[int, int, Span] | None = None
    cands = [_token_words(page, t) for t in tokens]
    # chains[t][w] = (missing so far, words) for chains whose last token t matched w.
    chains: list[dict[int, tuple[int, list[int]]]] = [{} for _ in tokens]
    for t in range(n):
        for w in cands[t]:
            options: list[tuple[int, list[int]]] = []
            if t <= allowed:
                options.append((t, [w]))
            for s in range(max(0, t - allowed - 1), t):
                skipped = t - s - 1
                for prev, (missing, words) in chains[s].items():
                    if (
                        missing + skipped <= allowed
                        and w not in words
                        and page.near(prev, w, skipped)
                    ):
                        options.append((missing + skipped, [*words, w]))
            if options:
                chains[t][w] = min(options, key=lambda o: (o[0], page.rank[o[1][0]]))
    for t in range(n):
        for missing, words in chains[t].values():
            total = missing + (n - 1 - t)
            if total <= allowed:
                key = (total, page.rank[words[0]])
                if best is None or key < best[:2]:
                    best = (total, page.rank[words[0]], tuple(words))
    return best


def _token_words(page: PageIndex, token: str) -> list[int]:
    """Words matching one value token: equal, equal up to digit look-alikes, or one edit away
    for tokens of six characters or more — but an edit may never touch a digit, since a
    changed digit is exactly what an invented number looks like."""
    found = list(page.by_key().get(token, []))
    token_digits = digits(token)
    if token_digits:
        folded = page.by_folded().get(token.translate(DIGIT_LOOKALIKES), [])
        found += [i for i in folded if i not in found]
    if len(token) >= 6:
        # A one-edit match keeps every digit: only words with the same digits can match, and
        # the look-alike matches among them are found above, so one edit is all to test.
        for length in (len(token) - 1, len(token), len(token) + 1):
            for i in page.by_shape().get((length, token_digits), []):
                if i not in found and within_one_edit(token, page.keys[i]):
                    found.append(i)
    return sorted(found, key=lambda i: page.rank[i])[:_MAX_TOKEN_WORDS]


class _Stream:
    """Depth-first search for one value on one page, within a fixed budget of word visits;
    stops once `out` holds `limit` matches (shared by the pages searched in turn)."""

    def __init__(
        self,
        page: PageIndex,
        target: str,
        kind: str,
        folded: bool,
        out: list[tuple[PageIndex, Span]],
        limit: int = MAX_MATCHES,
    ) -> None:
        self.page, self.target, self.kind, self.out = page, target, kind, out
        self.keys = page.folded() if folded else page.keys
        self.folded = folded
        self.limit = limit
        self.budget = _SEARCH_BUDGET

    def done(self) -> bool:
        return self.budget < 0 or len(self.out) >= self.limit

    def run(self) -> None:
        page, target, keys = self.page, self.target, self.keys
        for i, offset in page.starts(self.folded).get(target[0], []):
            if self.done():
                return
            if offset and self.kind == "identifier" and not _NUMBER_LABEL.match(keys[i][:offset]):
                continue
            rest = keys[i][offset:]
            if target.startswith(rest):
                self.extend(i, len(rest), [i])
            elif (
                self.kind == "text"
                and rest.startswith(target)
                and (offset + len(target) in page.ends(i))
            ):
                self.out.append((page, (i,)))

    def extend(self, i: int, pos: int, path: list[int]) -> None:
        page, target = self.page, self.target
        if pos == len(target):
            self.out.append((page, tuple(path)))
            return
        for j in page.successors(i):
            self.budget -= 1
            if self.done():
                return
            k = self.keys[j]
            if j in path or not k:
                continue
            if target.startswith(k, pos):
                self.extend(j, pos + len(k), [*path, j])
            elif (
                self.kind == "text"
                and k.startswith(target[pos:])
                and (len(target) - pos in page.ends(j))
            ):
                self.out.append((page, (*path, j)))  # the value ends inside "Liter:-Preis"
