"""The demo seed's rows: customers, products and each week's transactions with their dirty rows,
generated deterministically from ``seed_vocabulary.py``'s values (numpy, Arrow; no database
here: ``seed.py`` writes them).

The same :class:`SeedConfig` always gives identical rows. Every intentionally dirty *completed*
transaction has exactly one defect and is listed with the reason the pipeline is expected to give.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from customer_assets.demo.seed_vocabulary import (
    ADJECTIVES,
    CATEGORIES,
    CITIES,
    COUNTRIES,
    CURRENCIES,
    DIRTY_KINDS,
    FIRST_NAMES,
    INVALID_CURRENCIES,
    LAST_NAMES,
    SEGMENT_P,
    SEGMENTS,
    STATUSES,
    STREETS,
    UNKNOWN_CUSTOMER_BASE,
    UNKNOWN_PRODUCT_BASE,
    UNSUPPORTED_CURRENCIES,
)

MS_DAY, MS_WEEK = 86_400_000, 7 * 86_400_000
# The vocabulary as arrays: codes (index = code), rates, decimals, each country's currency, share.
_CUR_CODES = (*CURRENCIES, *UNSUPPORTED_CURRENCIES, *INVALID_CURRENCIES)
_RATES = np.array([r for r, _ in CURRENCIES.values()] + list(UNSUPPORTED_CURRENCIES.values()))
_DECIMALS = np.array([d for _, d in CURRENCIES.values()] + [2] * len(UNSUPPORTED_CURRENCIES))
_COUNTRY_CUR = np.array([_CUR_CODES.index(c) for _, c in COUNTRIES.values()])
_COUNTRY_P = np.array([w for w, _ in COUNTRIES.values()]) / sum(w for w, _ in COUNTRIES.values())
_KIND = {k: i for i, k in enumerate(DIRTY_KINDS)}


@dataclass(frozen=True)
class SeedConfig:
    """Size and shape of the synthetic dataset; equal configs give identical data."""

    customers: int = 5_000
    products: int = 400
    weeks: int = 12
    transactions_per_week: int = (
        8_000  # completed transactions per week, roughly (other statuses on top)
    )
    # Monday of the last seeded week (weeks are Mon 00:00 UTC..Mon)
    end_week: date = date(2026, 11, 16)
    dirty_fraction: float = 0.015  # share of each week's completed transactions that are dirty
    bots_per_week: int = 3  # customers with 55-80 completed transactions in the week
    random_seed: int = 42

    def __post_init__(self) -> None:
        if self.end_week.weekday() != 0:
            raise ValueError(f"end_week must be a Monday, got {self.end_week}")
        if not 0.0 <= self.dirty_fraction < 1.0:
            raise ValueError("dirty_fraction must be in [0, 1)")
        if min(self.customers, self.products, self.weeks, self.transactions_per_week) < 1:
            raise ValueError("customers, products, weeks and transactions_per_week must be >= 1")
        if self.products >= UNKNOWN_PRODUCT_BASE or self.bots_per_week < 0:
            raise ValueError(f"products must be < {UNKNOWN_PRODUCT_BASE} and bots_per_week >= 0")

    @property
    def week_starts(self) -> list[date]:
        """Mondays of the seeded weeks, oldest first."""
        return [self.end_week - timedelta(weeks=self.weeks - 1 - i) for i in range(self.weeks)]


@dataclass
class _Population:
    """Per-seed arrays for the regular customers (index i is C{i+1}) and products (P{i+1})."""

    created: np.ndarray  # customer created_at, epoch ms
    currency: np.ndarray  # index into _CUR_CODES
    weight: np.ndarray  # Zipf-like purchase propensity
    price: np.ndarray  # product price in USD
    product_p: np.ndarray  # Zipf-like product popularity (sums to 1)


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()) * 1000


def _ids(prefix: str, nums: np.ndarray, width: int, null: np.ndarray | None = None) -> pa.Array:
    """Format integers as ``prefix`` + zero-padded digits (NULL where ``null``)."""
    digits = pc.utf8_lpad(pa.array(nums, mask=null).cast(pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _ts(ms: np.ndarray) -> pa.Array:
    """Epoch ms as naive timestamps (the session is UTC); naive ones CSV-format much faster."""
    return pa.array(ms, pa.timestamp("ms"))


def _pick(rng: np.random.Generator, words: Sequence[str], n: int) -> np.ndarray:
    return np.asarray(words)[rng.integers(0, len(words), n)]


def _cat(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise string concatenation of arrays and scalars."""
    return functools.reduce(np.char.add, parts)  # type: ignore[arg-type]


def _phones(nums: np.ndarray) -> np.ndarray:
    """A phone of each customer's own (one shared makes one person): area 555, 556... by 100,000."""
    area, line = (555 + nums // 100_000).astype(str), np.char.zfill((nums % 100_000).astype(str), 5)
    return _cat("+1-", area, "-01", line)


def customer_table(
    rng: np.random.Generator,
    first_num: int,
    created: np.ndarray,
    country: np.ndarray,
    segment: np.ndarray,
) -> pa.Table:
    """Customer rows numbered from ``first_num``, with distinctive synthetic PII."""
    n = len(created)
    nums = np.arange(first_num, first_num + n)
    first, last, house = (
        _pick(rng, FIRST_NAMES, n),
        _pick(rng, LAST_NAMES, n),
        rng.integers(1, 300, n),
    )
    street, city = _pick(rng, STREETS, n), _pick(rng, CITIES, n)
    return pa.table(
        {
            "customer_id": _ids("C", nums, 7),
            "created_at": _ts(created),
            "country": pa.array(np.asarray(list(COUNTRIES))[country]),
            "segment": pa.array(np.asarray(SEGMENTS)[segment]),
            "email": pa.array(_cat(first, ".", last, nums.astype(str), "@example.com")),
            "phone": pa.array(_phones(nums)),
            "address": pa.array(_cat(house.astype(str), " ", street, " Street, ", city)),
        }
    )


def population(rng: np.random.Generator, cfg: SeedConfig) -> tuple[_Population, pa.Table, pa.Table]:
    """Regular customers and products: (population arrays, customers table, products table)."""
    n, n_prod, end_ms = cfg.customers, cfg.products, _ms(cfg.end_week) + MS_WEEK
    first_ms = min(_ms(date(2023, 1, 1)), _ms(cfg.week_starts[0]) - 365 * MS_DAY)
    created = first_ms + (rng.random(n) ** 0.8 * (end_ms - first_ms)).astype(np.int64)
    created[0] = first_ms  # C0000001 predates every week, so no week is without customers
    country = rng.choice(len(COUNTRIES), n, p=_COUNTRY_P)
    segment = rng.choice(len(SEGMENTS), n, p=SEGMENT_P)
    weight = (rng.permutation(n) + 1.0) ** -0.8 * np.array([1.0, 2.0, 4.0])[segment]
    customers = customer_table(rng, 1, created, country, segment)
    cat = rng.integers(0, len(CATEGORIES), n_prod)
    nouns = np.asarray([x for ns in CATEGORIES.values() for x in ns])[
        cat * 3 + rng.integers(0, 3, n_prod)
    ]
    name = _cat(
        _pick(rng, ADJECTIVES, n_prod), " ", nouns, " ", rng.integers(100, 1000, n_prod).astype(str)
    )
    price = np.round(np.clip(rng.lognormal(np.log(25.0), 1.0, n_prod), 0.5, 99_999.0), 2)
    product_p = (rng.permutation(n_prod) + 1.0) ** -0.9
    products = pa.table(
        {
            "product_id": _ids("P", np.arange(1, n_prod + 1), 5),
            "name": pa.array(name),
            "category": pa.array(np.asarray(list(CATEGORIES))[cat]),
            "price": pa.array(price),
        }
    )
    pop = _Population(created, _COUNTRY_CUR[country], weight, price, product_p / product_p.sum())
    return pop, customers, products


def _soft_cap(w: np.ndarray, n: int, cap: float) -> np.ndarray:
    """Draw probabilities whose expected counts over ``n`` draws are ``cap * (1 - exp(-s * w /
    cap))``, ``s`` found by bisection so they sum to ``n``: heavy customers stay Zipf-like but
    nobody expects more than ``cap`` transactions, keeping regular customers well below bots."""
    x = w / w.sum() * n
    lo, hi = 1.0, 2.0
    while (cap * -np.expm1(-hi * x / cap)).sum() < n:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (cap * -np.expm1(-mid * x / cap)).sum() < n else (lo, mid)
    e = -np.expm1(-hi * x / cap)
    return e / e.sum()


@dataclass(frozen=True)
class _WeekSizes:
    """How many rows of each sort a week gets: drawn first, in a fixed order (equal configs, equal
    weeks)."""

    dirty: int  # dirty completed rows, duplicates included
    kinds: np.ndarray  # dirty rows per kind, in DIRTY_KINDS order (the last: duplicates)
    bots: np.ndarray  # the week's bots, as sorted customer indices
    bot_rows: np.ndarray  # completed transactions of each bot
    clean: int  # clean completed rows of regular customers
    other: int  # rows of the other statuses

    @property
    def duplicates(self) -> int:
        return int(self.kinds[-1])

    @property
    def drawn(self) -> int:
        """Rows whose customer is drawn by weight: clean, other statuses, dirty but duplicates."""
        return self.clean + self.other + self.dirty - self.duplicates


def _week_sizes(
    rng: np.random.Generator, cfg: SeedConfig, pop: _Population, start: int
) -> _WeekSizes:
    """The week's row counts, its dirty rows per kind and its bots (customers older than the
    week)."""
    n_kinds = len(DIRTY_KINDS)
    n_completed = round(cfg.transactions_per_week * rng.uniform(0.93, 1.07))
    n_dirty, kinds = 0, np.zeros(n_kinds, np.int64)
    if cfg.dirty_fraction > 0:
        n_dirty = max(round(cfg.dirty_fraction * n_completed), n_kinds)
        kinds = 1 + rng.multinomial(n_dirty - n_kinds, np.full(n_kinds, 1 / n_kinds))
    old = np.flatnonzero(pop.created < start)
    bots = np.sort(rng.choice(old, min(cfg.bots_per_week, len(old) - 1), replace=False))
    bot_n = rng.integers(55, 81, len(bots))
    n_clean = max(n_completed - n_dirty - int(bot_n.sum()), int(kinds[-1]))
    n_other = round(n_completed * rng.uniform(0.09, 0.11))
    return _WeekSizes(n_dirty, kinds, bots, bot_n, n_clean, n_other)


def _week_rows(
    rng: np.random.Generator, pop: _Population, sizes: _WeekSizes, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its customer (index), dirty kind (-1: clean) and status (index into STATUSES).

    Rows: [clean completed | other statuses | dirty (all kinds but duplicates) | bots].
    """
    w = pop.weight * np.clip((end - np.maximum(pop.created, start)) / MS_WEEK, 0.0, 1.0)
    w[sizes.bots] = 0.0
    n_base = sizes.drawn
    base = rng.choice(
        len(w), n_base, p=_soft_cap(w, n_base, max(20.0, 3.0 * n_base / np.count_nonzero(w)))
    )
    cust = np.concatenate([base, np.repeat(sizes.bots, sizes.bot_rows)])
    kind = np.full(len(cust), -1)
    dirty_kinds = np.repeat(np.arange(len(DIRTY_KINDS) - 1), sizes.kinds[:-1])
    kind[sizes.clean + sizes.other : n_base] = dirty_kinds
    status = np.zeros(len(cust), np.int64)
    other_statuses = rng.choice(3, sizes.other, p=[0.45, 0.35, 0.2]) + 1
    status[sizes.clean : sizes.clean + sizes.other] = other_statuses
    return cust, kind, status


def _amounts(
    rng: np.random.Generator, pop: _Population, cur: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its product (number), USD value, currency decimals and amount in 0.0001 ticks."""
    n = len(cur)
    prod_num = rng.choice(len(pop.price), n, p=pop.product_p) + 1
    usd = pop.price[prod_num - 1] * rng.geometric(0.6, n) * rng.lognormal(0.0, 0.15, n)
    whale = rng.random(n) < 0.0005
    usd[whale] *= rng.lognormal(3.5, 0.8, int(whale.sum()))
    dec = _DECIMALS[cur]  # amounts are kept as integer ticks of 0.0001
    ticks = np.maximum(np.rint(usd * _RATES[cur] * 10.0**dec), 1).astype(np.int64) * 10 ** (4 - dec)
    return prod_num, usd, dec, ticks


def _dirty_rows(seq: np.ndarray, kind: np.ndarray, src: np.ndarray, start: int) -> pa.Table:
    """The week's dirty rows by transaction id, with the reason the pipeline must give each."""
    d_seq = np.concatenate([seq[kind >= 0], seq[src]])
    d_kind = np.concatenate([kind[kind >= 0], np.full(len(src), len(DIRTY_KINDS) - 1)])
    o = np.argsort(d_seq, kind="stable")
    return pa.table(
        {
            "transaction_id": _ids("T", d_seq[o], 10),
            "kind": pc.take(pa.array(list(DIRTY_KINDS)), pa.array(d_kind[o])),
            "expected_reason": pc.take(pa.array(list(DIRTY_KINDS.values())), pa.array(d_kind[o])),
            "week_start": pa.array(np.full(len(o), start // MS_DAY, np.int32), pa.date32()),
        }
    )


def _week_stats(week: date, sizes: _WeekSizes, transactions: int) -> dict[str, Any]:
    bots = zip(sizes.bots, sizes.bot_rows, strict=True)
    return {
        "week_start": week.isoformat(),
        "transactions": transactions,
        "completed": transactions - sizes.other,
        "other_status": sizes.other,
        "dirty": sizes.dirty,
        "dirty_by_kind": dict(zip(DIRTY_KINDS, map(int, sizes.kinds), strict=True)),
        "bot_customers": {f"C{b + 1:07d}": int(c) for b, c in bots},
    }


def _week(
    rng: np.random.Generator,
    cfg: SeedConfig,
    pop: _Population,
    week: date,
    seq0: int,
    special0: int,
) -> tuple[pa.Table, pa.Table, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """One week: (transactions, dirty rows, (created_at, country) of new customers, stats).

    Transaction ids start at ``seq0``; customers made for before-created rows at ``special0``.
    """
    start = _ms(week)
    end = start + MS_WEEK
    sizes = _week_sizes(rng, cfg, pop, start)
    cust, kind, status = _week_rows(rng, pop, sizes, start, end)
    n = len(cust)
    cust_num, cur, lo = cust + 1, pop.currency[cust], np.maximum(pop.created[cust], start)
    # BEFORE_CUSTOMER_CREATED rows get a dedicated new customer created 1-3 days after the row.
    before = kind == _KIND["before_customer_created"]
    nb = int(before.sum())
    sp_country = rng.choice(len(COUNTRIES), nb, p=_COUNTRY_P)
    cust_num[before], cur[before], lo[before] = (
        special0 + np.arange(nb),
        _COUNTRY_CUR[sp_country],
        start,
    )
    ts = lo + (rng.random(n) * (end - lo)).astype(np.int64)  # uniform in [max(start, created), end)
    sp_created = ts[before] + rng.integers(MS_DAY, 3 * MS_DAY + 1, nb)
    prod_num, usd, dec, ticks = _amounts(rng, pop, cur)
    _make_dirty(rng, kind, cust_num, prod_num, cur, ticks, usd, dec)
    # Ids follow time order; duplicates are exact copies of clean completed non-bot rows.
    seq = np.empty(n, np.int64)
    seq[np.argsort(ts, kind="stable")] = seq0 + np.arange(n)
    src = rng.choice(sizes.clean, sizes.duplicates, replace=False)  # [0, clean): clean completed
    rows = np.concatenate([np.arange(n), src])
    rows = rows[np.argsort(ts[rows], kind="stable")]
    tx = pa.table(
        {
            "transaction_id": _ids("T", seq[rows], 10),
            "customer_id": _ids("C", cust_num[rows], 7, cust_num[rows] < 0),
            "product_id": _ids("P", prod_num[rows], 5),
            "amount": pa.array(ticks[rows] / 1e4, mask=kind[rows] == _KIND["null_amount"]),
            "currency": pc.take(pa.array(_CUR_CODES), pa.array(cur[rows])),
            "timestamp": _ts(ts[rows]),
            "status": pc.take(pa.array(STATUSES), pa.array(status[rows])),
        }
    )
    stats = _week_stats(week, sizes, len(rows))
    return tx, _dirty_rows(seq, kind, src, start), (sp_created, sp_country), stats


def _make_dirty(
    rng: np.random.Generator,
    kind: np.ndarray,
    cust_num: np.ndarray,
    prod_num: np.ndarray,
    cur: np.ndarray,
    ticks: np.ndarray,
    usd: np.ndarray,
    dec: np.ndarray,
) -> None:
    """Give each dirty row (``kind >= 0``) its single defect, in place (NULL amounts are masked
    later)."""

    def rows(name: str) -> tuple[np.ndarray, int]:
        m = kind == _KIND[name]
        return m, int(m.sum())

    m, k = rows("null_customer_id")
    cust_num[m] = -1
    m, k = rows("non_positive_amount")
    ticks[m] = np.where(rng.random(k) < 0.3, 0, -ticks[m])
    m, k = rows("invalid_currency")
    cur[m] = len(_RATES) + rng.integers(0, len(INVALID_CURRENCIES), k)
    m, k = rows("unsupported_currency")
    cur[m] = len(CURRENCIES) + rng.integers(0, len(UNSUPPORTED_CURRENCIES), k)
    ticks[m] = np.maximum(np.rint(usd[m] * _RATES[cur[m]] * 100), 1).astype(np.int64) * 100
    m, k = rows("precision_mismatch")  # e.g. JPY 1234.5, USD 10.005
    ticks[m] += np.where(
        dec[m] == 0, rng.choice([5000, 2500, 1000], k), rng.choice([50, 10, 75], k)
    )
    m, k = rows("unknown_customer")
    cust_num[m] = UNKNOWN_CUSTOMER_BASE + rng.integers(0, 1000, k)
    m, k = rows("unknown_product")
    prod_num[m] = UNKNOWN_PRODUCT_BASE + rng.integers(0, 10_000, k)


def seeded_weeks(
    rng: np.random.Generator, cfg: SeedConfig, pop: _Population
) -> Iterator[tuple[Any, ...]]:
    """Yield :func:`_week` results oldest first, threading the id sequences through."""
    seq, special = 1, cfg.customers + 1
    for week in cfg.week_starts:
        out = _week(rng, cfg, pop, week, seq, special)
        seq, special = seq + out[0].num_rows, special + len(out[2][0])
        yield out
