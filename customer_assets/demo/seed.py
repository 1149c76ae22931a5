"""Seed a PostgreSQL "production" source database with a deterministic synthetic dataset.

Used as the demo default source, by tests and by benchmarks. :func:`seed_database` drops and
recreates ``customers``, ``products``, ``transactions``, ``demo_seed_dirty_rows`` and
``demo_seed_info`` in one transaction, generating and COPY-loading transactions week by week
(the next week is generated in a background thread while the current one loads), so memory stays
bounded at large scale. The same :class:`SeedConfig` always produces identical table contents
(only ``demo_seed_info.seeded_at`` differs).

Every intentionally dirty *completed* transaction is listed in ``demo_seed_dirty_rows`` with the
reason code the pipeline is expected to assign; each has exactly one defect. ``customers.email``,
``phone`` and ``address`` are synthetic PII (``yuki.tanaka123@example.com``, ``+1-555-0100123``,
``42 Oak Street, Springfield``) that the pipeline must never extract.

CLI: ``python -m customer_assets.demo.seed --dsn postgresql://... [--customers N ...]``
"""

from __future__ import annotations

import argparse
import functools
import io
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, TypeVar

import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

#: country -> (share of customers, currency)
COUNTRIES: dict[str, tuple[float, str]] = {
    "US": (0.30, "USD"), "GB": (0.10, "GBP"), "DE": (0.09, "EUR"), "FR": (0.08, "EUR"),
    "ES": (0.04, "EUR"), "IT": (0.04, "EUR"), "NL": (0.03, "EUR"), "JP": (0.07, "JPY"),
    "KR": (0.04, "KRW"), "CH": (0.02, "CHF"), "SE": (0.02, "SEK"), "BR": (0.04, "BRL"),
    "IN": (0.05, "INR"), "CA": (0.05, "CAD"), "AU": (0.03, "AUD"),
}
#: currency -> (approximate units per USD, ISO 4217 minor units); all have an ECB reference rate.
CURRENCIES: dict[str, tuple[float, int]] = {
    "USD": (1.0, 2), "EUR": (0.92, 2), "GBP": (0.79, 2), "JPY": (150.0, 0), "KRW": (1350.0, 0),
    "CHF": (0.88, 2), "SEK": (10.5, 2), "BRL": (5.0, 2), "INR": (83.0, 2), "CAD": (1.36, 2),
    "AUD": (1.52, 2),
}
#: Valid ISO 4217 codes (2 minor units) without an ECB reference rate -> units per USD.
UNSUPPORTED_CURRENCIES = {"AED": 3.67, "NGN": 1500.0, "SAR": 3.75, "KES": 129.0, "EGP": 48.0, "PKR": 280.0}
#: Not ISO 4217 codes at all ('XXX' and 'XTS' are valid ISO codes, so they are never used).
INVALID_CURRENCIES = ("ABC", "usd ", "EURO", "US$", "DOLLAR", "E")
#: dirty kind -> expected reason code ('duplicate_transaction_id' must stay last).
DIRTY_KINDS: dict[str, str] = {
    "null_customer_id": "MISSING_CUSTOMER_ID", "null_amount": "MISSING_AMOUNT",
    "non_positive_amount": "NON_POSITIVE_AMOUNT", "invalid_currency": "INVALID_CURRENCY",
    "unsupported_currency": "UNSUPPORTED_CURRENCY", "precision_mismatch": "PRECISION_MISMATCH",
    "before_customer_created": "BEFORE_CUSTOMER_CREATED", "unknown_customer": "UNKNOWN_CUSTOMER",
    "unknown_product": "UNKNOWN_PRODUCT", "duplicate_transaction_id": "DUPLICATE_TRANSACTION_ID",
}
STATUSES = ("completed", "pending", "refunded", "failed")
SEGMENTS = ("consumer", "smb", "enterprise")
CATEGORIES: dict[str, tuple[str, str, str]] = {
    "Electronics": ("Headphones", "Charger", "Speaker"), "Home & Kitchen": ("Kettle", "Blender", "Pan"),
    "Books": ("Novel", "Cookbook", "Atlas"), "Clothing": ("Jacket", "Sweater", "Scarf"),
    "Sports": ("Yoga Mat", "Racket", "Bottle"), "Toys": ("Puzzle", "Robot Kit", "Plush"),
    "Beauty": ("Serum", "Lotion", "Palette"), "Grocery": ("Coffee", "Tea Set", "Olive Oil"),
    "Garden": ("Planter", "Hose", "Shears"), "Office": ("Notebook", "Desk Lamp", "Stapler"),
}
ADJECTIVES = ("Classic", "Compact", "Deluxe", "Eco", "Pro", "Smart", "Ultra", "Vintage")
FIRST_NAMES = ("olivia", "liam", "emma", "noah", "amelia", "oliver", "sofia", "elijah", "yuki",
               "hana", "lukas", "mia", "louis", "chloe", "arjun", "priya", "lucas", "ana")
LAST_NAMES = ("smith", "johnson", "brown", "garcia", "muller", "schmidt", "martin", "bernard",
              "tanaka", "sato", "kim", "park", "rossi", "silva", "patel", "sharma", "nilsson", "wong")
STREETS = ("Maple", "Oak", "Cedar", "Elm", "Willow", "Birch", "Harbor", "Mill", "Station", "Park")
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Kingsport", "Bayview")
DDL = """
DROP TABLE IF EXISTS customers, products, transactions, demo_seed_dirty_rows, demo_seed_info;
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL,
  country TEXT, segment TEXT, email TEXT, phone TEXT, address TEXT);
CREATE TABLE products (product_id TEXT PRIMARY KEY, name TEXT, category TEXT, price NUMERIC(12,2));
CREATE TABLE transactions (transaction_id TEXT, customer_id TEXT, product_id TEXT,
  amount NUMERIC(18,4), currency TEXT, "timestamp" TIMESTAMPTZ, status TEXT);
CREATE TABLE demo_seed_dirty_rows (transaction_id TEXT, kind TEXT, expected_reason TEXT, week_start DATE);
CREATE TABLE demo_seed_info (seeded_at TIMESTAMPTZ, config JSONB, counts JSONB);
"""
MS_DAY, MS_WEEK = 86_400_000, 7 * 86_400_000
CHUNK_ROWS = 200_000  # rows per COPY statement
UNKNOWN_CUSTOMER_BASE = 9_999_000  # unknown customer ids are C9999000..C9999999
UNKNOWN_PRODUCT_BASE = 90_000  # unknown product ids are P90000..P99999
_CUR_CODES = (*CURRENCIES, *UNSUPPORTED_CURRENCIES, *INVALID_CURRENCIES)
_RATES = np.array([r for r, _ in CURRENCIES.values()] + list(UNSUPPORTED_CURRENCIES.values()))
_DECIMALS = np.array([d for _, d in CURRENCIES.values()] + [2] * len(UNSUPPORTED_CURRENCIES))
_COUNTRY_CUR = np.array([_CUR_CODES.index(c) for _, c in COUNTRIES.values()])
_COUNTRY_P = np.array([w for w, _ in COUNTRIES.values()]) / sum(w for w, _ in COUNTRIES.values())
_SEGMENT_P = [0.75, 0.2, 0.05]
_KIND = {k: i for i, k in enumerate(DIRTY_KINDS)}
T = TypeVar("T")


@dataclass(frozen=True)
class SeedConfig:
    """Size and shape of the synthetic dataset; equal configs give identical data."""

    customers: int = 5_000
    products: int = 400
    weeks: int = 12
    transactions_per_week: int = 8_000  # completed transactions per week, roughly (other statuses on top)
    end_week: date = date(2026, 11, 16)  # Monday of the last seeded week (weeks are Mon 00:00 UTC..Mon)
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


def _customer_table(rng: np.random.Generator, first_num: int, created: np.ndarray,
                    country: np.ndarray, segment: np.ndarray) -> pa.Table:
    """Customer rows numbered from ``first_num``, with distinctive synthetic PII."""
    n = len(created)
    nums = np.arange(first_num, first_num + n)
    first, last, house = _pick(rng, FIRST_NAMES, n), _pick(rng, LAST_NAMES, n), rng.integers(1, 300, n)
    street, city = _pick(rng, STREETS, n), _pick(rng, CITIES, n)
    return pa.table({
        "customer_id": _ids("C", nums, 7), "created_at": _ts(created),
        "country": pa.array(np.asarray(list(COUNTRIES))[country]),
        "segment": pa.array(np.asarray(SEGMENTS)[segment]),
        "email": pa.array(_cat(first, ".", last, nums.astype(str), "@example.com")),
        "phone": pa.array(_cat("+1-555-01", np.char.zfill((nums % 100_000).astype(str), 5))),
        "address": pa.array(_cat(house.astype(str), " ", street, " Street, ", city)),
    })


def _population(rng: np.random.Generator, cfg: SeedConfig) -> tuple[_Population, pa.Table, pa.Table]:
    """Regular customers and products: (population arrays, customers table, products table)."""
    n, n_prod, end_ms = cfg.customers, cfg.products, _ms(cfg.end_week) + MS_WEEK
    first_ms = min(_ms(date(2023, 1, 1)), _ms(cfg.week_starts[0]) - 365 * MS_DAY)
    created = first_ms + (rng.random(n) ** 0.8 * (end_ms - first_ms)).astype(np.int64)
    created[0] = first_ms  # C0000001 predates every week, so no week is without customers
    country = rng.choice(len(COUNTRIES), n, p=_COUNTRY_P)
    segment = rng.choice(len(SEGMENTS), n, p=_SEGMENT_P)
    weight = (rng.permutation(n) + 1.0) ** -0.8 * np.array([1.0, 2.0, 4.0])[segment]
    customers = _customer_table(rng, 1, created, country, segment)
    cat = rng.integers(0, len(CATEGORIES), n_prod)
    nouns = np.asarray([x for ns in CATEGORIES.values() for x in ns])[cat * 3 + rng.integers(0, 3, n_prod)]
    name = _cat(_pick(rng, ADJECTIVES, n_prod), " ", nouns, " ", rng.integers(100, 1000, n_prod).astype(str))
    price = np.round(np.clip(rng.lognormal(np.log(25.0), 1.0, n_prod), 0.5, 99_999.0), 2)
    product_p = (rng.permutation(n_prod) + 1.0) ** -0.9
    products = pa.table({"product_id": _ids("P", np.arange(1, n_prod + 1), 5), "name": pa.array(name),
                         "category": pa.array(np.asarray(list(CATEGORIES))[cat]), "price": pa.array(price)})
    pop = _Population(created, _COUNTRY_CUR[country], weight, price, product_p / product_p.sum())
    return pop, customers, products


def _soft_cap(w: np.ndarray, n: int, cap: float) -> np.ndarray:
    """Draw probabilities whose expected counts over ``n`` draws are ``cap * (1 - exp(-s * w / cap))``.

    ``s`` is found by bisection so the expected counts sum to ``n``: heavy customers stay Zipf-like
    but nobody expects more than ``cap`` transactions, keeping regular customers well below bots.
    """
    x = w / w.sum() * n
    lo, hi = 1.0, 2.0
    while (cap * -np.expm1(-hi * x / cap)).sum() < n:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (cap * -np.expm1(-mid * x / cap)).sum() < n else (lo, mid)
    e = -np.expm1(-hi * x / cap)
    return e / e.sum()


def _week(rng: np.random.Generator, cfg: SeedConfig, pop: _Population, week: date, seq0: int,
          special0: int) -> tuple[pa.Table, pa.Table, tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """One week: (transactions, dirty rows, (created_at, country) of new customers, stats).

    Transaction ids start at ``seq0``; customers made for before-created rows at ``special0``.
    """
    start, n_kinds = _ms(week), len(DIRTY_KINDS)
    end = start + MS_WEEK
    n_completed = round(cfg.transactions_per_week * rng.uniform(0.93, 1.07))
    n_dirty, kinds = 0, np.zeros(n_kinds, np.int64)
    if cfg.dirty_fraction > 0:
        n_dirty = max(round(cfg.dirty_fraction * n_completed), n_kinds)
        kinds = 1 + rng.multinomial(n_dirty - n_kinds, np.full(n_kinds, 1 / n_kinds))
    n_dup = int(kinds[-1])
    old = np.flatnonzero(pop.created < start)
    bots = np.sort(rng.choice(old, min(cfg.bots_per_week, len(old) - 1), replace=False))
    bot_n = rng.integers(55, 81, len(bots))
    n_clean = max(n_completed - n_dirty - int(bot_n.sum()), n_dup)
    n_other = round(n_completed * rng.uniform(0.09, 0.11))
    # Rows: [clean completed | other statuses | dirty (all kinds but duplicates) | bots].
    w = pop.weight * np.clip((end - np.maximum(pop.created, start)) / MS_WEEK, 0.0, 1.0)
    w[bots] = 0.0
    n_base = n_clean + n_other + n_dirty - n_dup
    base = rng.choice(len(w), n_base, p=_soft_cap(w, n_base, max(20.0, 3.0 * n_base / np.count_nonzero(w))))
    cust = np.concatenate([base, np.repeat(bots, bot_n)])
    n = len(cust)
    kind = np.full(n, -1)
    kind[n_clean + n_other:n_base] = np.repeat(np.arange(n_kinds - 1), kinds[:-1])
    status = np.zeros(n, np.int64)
    status[n_clean:n_clean + n_other] = rng.choice(3, n_other, p=[0.45, 0.35, 0.2]) + 1
    cust_num, cur, lo = cust + 1, pop.currency[cust], np.maximum(pop.created[cust], start)
    # BEFORE_CUSTOMER_CREATED rows get a dedicated new customer created 1-3 days after the row.
    before = kind == _KIND["before_customer_created"]
    nb = int(before.sum())
    sp_country = rng.choice(len(COUNTRIES), nb, p=_COUNTRY_P)
    cust_num[before], cur[before], lo[before] = special0 + np.arange(nb), _COUNTRY_CUR[sp_country], start
    ts = lo + (rng.random(n) * (end - lo)).astype(np.int64)  # uniform in [max(start, created), end)
    sp_created = ts[before] + rng.integers(MS_DAY, 3 * MS_DAY + 1, nb)
    prod_num = rng.choice(len(pop.price), n, p=pop.product_p) + 1
    usd = pop.price[prod_num - 1] * rng.geometric(0.6, n) * rng.lognormal(0.0, 0.15, n)
    whale = rng.random(n) < 0.0005
    usd[whale] *= rng.lognormal(3.5, 0.8, int(whale.sum()))
    dec = _DECIMALS[cur]  # amounts are kept as integer ticks of 0.0001
    ticks = np.maximum(np.rint(usd * _RATES[cur] * 10.0**dec), 1).astype(np.int64) * 10 ** (4 - dec)
    _make_dirty(rng, kind, cust_num, prod_num, cur, ticks, usd, dec)
    # Ids follow time order; duplicates are exact copies of clean completed non-bot rows.
    seq = np.empty(n, np.int64)
    seq[np.argsort(ts, kind="stable")] = seq0 + np.arange(n)
    src = rng.choice(n_clean, n_dup, replace=False)  # rows [0, n_clean) are clean completed
    rows = np.concatenate([np.arange(n), src])
    rows = rows[np.argsort(ts[rows], kind="stable")]
    tx = pa.table({
        "transaction_id": _ids("T", seq[rows], 10),
        "customer_id": _ids("C", cust_num[rows], 7, cust_num[rows] < 0),
        "product_id": _ids("P", prod_num[rows], 5),
        "amount": pa.array(ticks[rows] / 1e4, mask=kind[rows] == _KIND["null_amount"]),
        "currency": pc.take(pa.array(_CUR_CODES), pa.array(cur[rows])),
        "timestamp": _ts(ts[rows]),
        "status": pc.take(pa.array(STATUSES), pa.array(status[rows])),
    })
    d_seq = np.concatenate([seq[kind >= 0], seq[src]])
    d_kind = np.concatenate([kind[kind >= 0], np.full(n_dup, n_kinds - 1)])
    o = np.argsort(d_seq, kind="stable")
    dirty = pa.table({
        "transaction_id": _ids("T", d_seq[o], 10),
        "kind": pc.take(pa.array(list(DIRTY_KINDS)), pa.array(d_kind[o])),
        "expected_reason": pc.take(pa.array(list(DIRTY_KINDS.values())), pa.array(d_kind[o])),
        "week_start": pa.array(np.full(len(o), start // MS_DAY, np.int32), pa.date32()),
    })
    stats = {
        "week_start": week.isoformat(), "transactions": len(rows), "completed": len(rows) - n_other,
        "other_status": n_other, "dirty": n_dirty,
        "dirty_by_kind": dict(zip(DIRTY_KINDS, map(int, kinds), strict=True)),
        "bot_customers": {f"C{b + 1:07d}": int(c) for b, c in zip(bots, bot_n, strict=True)},
    }
    return tx, dirty, (sp_created, sp_country), stats


def _make_dirty(rng: np.random.Generator, kind: np.ndarray, cust_num: np.ndarray, prod_num: np.ndarray,
                cur: np.ndarray, ticks: np.ndarray, usd: np.ndarray, dec: np.ndarray) -> None:
    """Give each dirty row (``kind >= 0``) its single defect, in place (NULL amounts are masked later)."""
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
    ticks[m] += np.where(dec[m] == 0, rng.choice([5000, 2500, 1000], k), rng.choice([50, 10, 75], k))
    m, k = rows("unknown_customer")
    cust_num[m] = UNKNOWN_CUSTOMER_BASE + rng.integers(0, 1000, k)
    m, k = rows("unknown_product")
    prod_num[m] = UNKNOWN_PRODUCT_BASE + rng.integers(0, 10_000, k)


def _weeks(rng: np.random.Generator, cfg: SeedConfig, pop: _Population) -> Iterator[tuple[Any, ...]]:
    """Yield :func:`_week` results oldest first, threading the id sequences through."""
    seq, special = 1, cfg.customers + 1
    for week in cfg.week_starts:
        out = _week(rng, cfg, pop, week, seq, special)
        seq, special = seq + out[0].num_rows, special + len(out[2][0])
        yield out


def _prefetch(items: Iterator[T]) -> Iterator[T]:
    """Compute the next item in a background thread while the caller handles the current one."""
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(next, items, None)
        while (item := nxt.result()) is not None:
            nxt = pool.submit(next, items, None)
            yield item


def _copy(cur: Any, table: str, data: pa.Table) -> None:
    """COPY ``data`` into ``table`` as CSV, CHUNK_ROWS rows per statement."""
    columns = ", ".join(f'"{c}"' for c in data.column_names)
    sql = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, FREEZE)"
    for off in range(0, data.num_rows, CHUNK_ROWS):
        sink = pa.BufferOutputStream()
        pacsv.write_csv(data.slice(off, CHUNK_ROWS), sink, pacsv.WriteOptions(include_header=False))
        cur.copy_expert(sql, io.BytesIO(sink.getvalue()), size=1 << 20)


def seed_database(dsn: str, config: SeedConfig = SeedConfig()) -> dict[str, Any]:
    """Drop, recreate and fill the demo source tables in one transaction; return a counts summary.

    The summary (also stored in ``demo_seed_info.counts``) has ``tables`` (rows per table),
    ``dirty_rows`` (per kind) and ``weeks`` (per week: row counts, dirty rows per kind and the
    bot customers with their completed-transaction counts).
    """
    rng = np.random.default_rng(config.random_seed)
    pop, customers, products = _population(rng, config)
    weeks: list[dict[str, Any]] = []
    specials: list[tuple[np.ndarray, np.ndarray]] = []
    n_tx = n_dirty = 0
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(74318921); SET LOCAL timezone = 'UTC';"
                    "SET LOCAL synchronous_commit = off; SET LOCAL maintenance_work_mem = '256MB';")
        cur.execute(DDL)
        _copy(cur, "customers", customers)
        _copy(cur, "products", products)
        for tx, dirty, special, stats in _prefetch(_weeks(rng, config, pop)):
            _copy(cur, "transactions", tx)
            _copy(cur, "demo_seed_dirty_rows", dirty)
            n_tx, n_dirty = n_tx + tx.num_rows, n_dirty + dirty.num_rows
            specials.append(special)
            weeks.append(stats)
        sp_created, sp_country = (np.concatenate(a) for a in zip(*specials, strict=True))
        n_cust = config.customers + len(sp_created)
        if n_cust >= UNKNOWN_CUSTOMER_BASE:
            raise ValueError("too many customers: ids would collide with unknown-customer ids")
        if len(sp_created):
            sp_segment = rng.choice(len(SEGMENTS), len(sp_created), p=_SEGMENT_P)
            extra = _customer_table(rng, config.customers + 1, sp_created, sp_country, sp_segment)
            _copy(cur, "customers", extra)
        cur.execute('CREATE INDEX ON transactions ("timestamp");'
                    'CREATE INDEX ON transactions (customer_id, "timestamp");')
        summary = {
            "tables": {"customers": n_cust, "products": config.products, "transactions": n_tx,
                       "demo_seed_dirty_rows": n_dirty},
            "dirty_rows": {k: sum(w["dirty_by_kind"][k] for w in weeks) for k in DIRTY_KINDS},
            "weeks": weeks,
        }
        config_json = {**asdict(config), "end_week": config.end_week.isoformat()}
        cur.execute("INSERT INTO demo_seed_info VALUES (now(), %s, %s)",
                    (json.dumps(config_json), json.dumps(summary)))
        cur.execute("ANALYZE customers, products, transactions, demo_seed_dirty_rows, demo_seed_info")
    return summary


def is_seeded(dsn: str) -> bool:
    """True when ``demo_seed_info`` exists and holds a row (i.e. a seed completed)."""
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('demo_seed_info') IS NOT NULL")
        if not cur.fetchone()[0]:
            return False
        cur.execute("SELECT EXISTS (SELECT 1 FROM demo_seed_info)")
        return bool(cur.fetchone()[0])


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point: seed the database at ``--dsn`` and print the summary as JSON."""
    d = SeedConfig()
    p = argparse.ArgumentParser(description="Seed a PostgreSQL demo source database.")
    p.add_argument("--dsn", required=True, help="libpq URI: postgresql://postgres:@/postgres?host=/tmp/x")
    p.add_argument("--customers", type=int, default=d.customers)
    p.add_argument("--products", type=int, default=d.products)
    p.add_argument("--weeks", type=int, default=d.weeks)
    p.add_argument("--transactions-per-week", type=int, default=d.transactions_per_week)
    p.add_argument("--end-week", type=date.fromisoformat, default=d.end_week, help="YYYY-MM-DD, a Monday")
    p.add_argument("--dirty-fraction", type=float, default=d.dirty_fraction)
    p.add_argument("--bots-per-week", type=int, default=d.bots_per_week)
    p.add_argument("--seed", type=int, default=d.random_seed)
    a = p.parse_args(argv)
    cfg = SeedConfig(a.customers, a.products, a.weeks, a.transactions_per_week, a.end_week,
                     a.dirty_fraction, a.bots_per_week, a.seed)
    print(json.dumps(seed_database(a.dsn, cfg), indent=2))


if __name__ == "__main__":
    main()
