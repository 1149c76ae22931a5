"""Local paths and thresholds, read from the environment once when resources are built."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from customer_assets.logic.hard_rules import DEFAULT_MAX_AMOUNT_USD
from customer_assets.weeks import first_week


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


class PipelineSettings(dg.ConfigurableResource):
    """Where the pipeline writes on the local disk, and when data quality stops a week."""

    data_dir: str = Field(
        description="Intermediate datasets (hold customer data; removed after a successful week)."
    )
    reports_dir: str = Field(
        description="Reports for humans: quality_report.json, anomalies.csv, load reports."
    )
    etl_log_dir: str = Field(
        description="Run summaries etl_YYYYMMDD_HHMMSS.json and failed_YYYYMMDD_HHMMSS.json."
    )
    quality_fail_rate: float = Field(
        default=0.10, description="Quarantined share above which the week stops."
    )
    quality_warn_rate: float = Field(
        default=0.05, description="Quarantined share above which the week warns."
    )
    max_amount_usd: float = Field(
        default=DEFAULT_MAX_AMOUNT_USD,
        description="USD amount above which a transaction is "
        "quarantined AMOUNT_ABOVE_CEILING (MAX_AMOUNT_USD), not loaded.",
    )
    events_max_malformed_share: float = Field(
        default=0.05,
        description="Share of malformed lines in a week of the "
        "landing zone above which the week stops (EVENTS_MAX_MALFORMED_SHARE).",
    )
    events_path: str | None = Field(
        default=None,
        description="Landing zone of behavioural events "
        "(dt=YYYY-MM-DD/*.jsonl folders); unset: no event source.",
    )
    source_shrink_limit: float = Field(
        default=0.5,
        description="Share of a loaded week's source rows that may "
        "disappear before the week is no longer re-loaded without an operator's "
        "allow_shrink (SOURCE_SHRINK_LIMIT); a week that drops to zero always is.",
    )
    late_change_weeks: int = Field(
        default=8,
        description="How many recent weeks the sensor source_changes "
        "compares with the source (LATE_CHANGE_WEEKS).",
    )
    event_type_aliases: str = Field(
        default="{}", description='JSON map of other event names, e.g. {"pv": "page_view"}.'
    )
    crm_min_records: int = Field(
        default=100, description="CRM records a week should have; fewer warns (CRM_MIN_RECORDS)."
    )
    previous_week_wait_seconds: int = Field(
        default=21600,
        description="How long a week's carried steps wait for a started run of the week "
        "before it (weeks run at once, as in a backfill) before carrying without it, for the "
        "sensor source_changes to repair (PREVIOUS_WEEK_WAIT_SECONDS; 0: never wait).",
    )
    week_wide_steps_at_once: int = Field(
        default=0,
        description="How many steps holding week-wide frames (validation, the transform, the "
        "CRM's records, the identity, the profiles) a run runs at once, the others beside them "
        "(WEEK_WIDE_STEPS_AT_ONCE); 1 lowers the week's peak memory and lengthens it; 0: no limit.",
    )
    intermediates_url: str | None = Field(
        default=None,
        description="gs://bucket/prefix: the intermediates (and the runs' claims on "
        "weeks) go to this bucket, for runs that do not share a disk "
        "(CUSTOMER_ASSETS_INTERMEDIATES_URL); unset: data_dir.",
    )
    storage_emulator_host: str | None = Field(
        default=None,
        description="host:port of a local GCS emulator for that bucket "
        "(STORAGE_EMULATOR_HOST); for tests.",
    )

    def event_aliases(self) -> dict[str, str]:
        return event_aliases(self.event_type_aliases)

    def week_reports_dir(self, partition_key: str) -> Path:
        path = Path(self.reports_dir) / partition_key
        path.mkdir(parents=True, exist_ok=True)
        return path


def _default(field: str) -> str:
    """A threshold's default as its variable spells it, declared once: on ``PipelineSettings``."""
    value = PipelineSettings.model_fields[field].default
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def _rate(name: str, field: str) -> float:
    value = _env(name, default := _default(field))
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(
            f"{name}={value!r} must be a fraction between 0 and 1, e.g. {default}"
        ) from None
    if not 0 <= rate <= 1:
        raise ValueError(f"{name}={value!r} must be a fraction between 0 and 1, e.g. {default}")
    return rate


def _amount(name: str, field: str) -> float:
    value = _env(name, default := _default(field))
    try:
        amount = float(value)
    except ValueError:
        amount = float("nan")
    if not amount > 0 or amount == float("inf"):
        raise ValueError(f"{name}={value!r} must be a positive amount in USD, e.g. {default}")
    return amount


def _weeks(name: str, field: str) -> int:
    value = _env(name, default := _default(field))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"{name}={value!r} must be a whole number of weeks, at least 1 (default {default})"
        )
    return int(value)


def _count(name: str, field: str) -> int:
    value = _env(name, default := _default(field))
    if not value.isdigit():
        raise ValueError(f"{name}={value!r} must be a whole number, at least 0 (default {default})")
    return int(value)


def event_aliases(value: str | None, name: str = "EVENT_TYPE_ALIASES") -> dict[str, str]:
    """The configured event-name aliases; a value that is not a JSON object of names to names fails,
    naming the variable (when the definitions load, not inside the profiles' step)."""
    example = '{"pv": "page_view"}'
    try:
        aliases = json.loads(value or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{name}={value!r} is not JSON ({exc.msg}); it must be an object mapping other event "
            f"names to event types, e.g. {example}"
        ) from None
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise ValueError(
            f"{name}={value!r} must be a JSON object mapping other event names to event types "
            f"(text), e.g. {example}"
        )
    return {str(k): v for k, v in aliases.items()}


def _seconds(name: str, default: str) -> int:
    value = _env(name, default)
    if not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"{name}={value!r} must be a whole number of seconds, at least 1 (default {default})"
        )
    return int(value)


def source_timeouts_from_env() -> dict[str, int]:
    """The source connection's timeouts in seconds: SOURCE_STATEMENT_TIMEOUT (a query's run time,
    default 1800) and SOURCE_LOCK_TIMEOUT (a query's wait for a table lock, default 120)."""
    return {
        "statement_timeout": _seconds("SOURCE_STATEMENT_TIMEOUT", "1800"),
        "lock_timeout": _seconds("SOURCE_LOCK_TIMEOUT", "120"),
    }


def kafka_configured() -> bool:
    """Kafka is a source of the events (KAFKA_BROKERS): its consumer lands the topic in the landing
    zone."""
    return bool(os.environ.get("KAFKA_BROKERS"))


# Which KAFKA_* variables are client settings: the security ones, passed through
# (KAFKA_SASL_PASSWORD -> sasl.password). Others (KAFKA_HOME, KAFKA_OPTS of a Kafka installation)
# are not the pipeline's.
SECURITY_PREFIXES = ("KAFKA_SECURITY_", "KAFKA_SASL_", "KAFKA_SSL_")


def client_setting(variable: str) -> str:
    """``KAFKA_SASL_MECHANISM`` -> ``sasl.mechanism``."""
    return variable.removeprefix("KAFKA_").lower().replace("_", ".")


def security_variables(environ: dict[str, str]) -> dict[str, str]:
    """Client setting -> variable name, for the set security variables among ``environ``'s names."""
    return {
        client_setting(name): name
        for name in sorted(environ)
        if name.startswith(SECURITY_PREFIXES) and environ[name]
    }


def kafka_settings_from_env() -> dict:
    """KAFKA_TOPIC, KAFKA_GROUP_ID, KAFKA_AVRO_SCHEMA, KAFKA_MAX_LAG_DAYS, KAFKA_TIMEOUT_SECONDS and
    KAFKA_CONSUME_SECONDS, checked; the security settings are passed by name only
    (``security_variables``)."""
    value = _env("KAFKA_MAX_LAG_DAYS", "3")
    try:
        lag = float(value)
    except ValueError:
        lag = -1.0
    if not 0 <= lag < float("inf"):
        raise ValueError(
            f"KAFKA_MAX_LAG_DAYS={value!r} must be a number of days, at least 0 (default 3)"
        )
    schema = os.environ.get("KAFKA_AVRO_SCHEMA") or None
    if schema is not None and not Path(schema).is_file():
        raise ValueError(
            f"KAFKA_AVRO_SCHEMA={schema!r} is not a file: it must be the path of the values' Avro "
            "schema (.avsc); unset it for JSON values"
        )
    return {
        "brokers": os.environ.get("KAFKA_BROKERS") or None,
        "topic": _env("KAFKA_TOPIC", "customer-events"),
        "group_id": _env("KAFKA_GROUP_ID", "customer-assets"),
        "avro_schema": schema,
        "max_lag_days": lag,
        "timeout_seconds": float(_seconds("KAFKA_TIMEOUT_SECONDS", "30")),
        "consume_seconds": float(_seconds("KAFKA_CONSUME_SECONDS", "1800")),
        "security_settings": security_variables(dict(os.environ)),
    }


def source_configured() -> bool:
    """A source database is configured (DB_HOST); without one the local default is the embedded
    demo."""
    return bool(os.environ.get("DB_HOST"))


def first_week_from_env() -> str:
    """The first weekly partition: PIPELINE_FIRST_WEEK, else where the embedded demo or a real
    source starts."""
    return first_week(os.environ.get("PIPELINE_FIRST_WEEK"), embedded_demo=not source_configured())


def configure_runtime() -> None:
    """Process-wide choices, made once where the pipeline starts (its definitions, a benchmark
    probe, the tests), never as a side effect of importing a module:

    - text columns as Arrow-backed ``str`` (pandas 3's default, opt-in on pandas 2.3): a week's
      strings stay in Arrow buffers from the COPY stream through Parquet and DuckDB instead of
      becoming millions of Python objects, which is most of the pipeline's time and memory otherwise
      (see benchmarks/);
    - Copy-on-Write (also pandas 3's behaviour): derived frames share their parents' columns until
      written to, so validation and enrichment do not copy the whole week at every ``assign``;
    - Arrow's buffers from the C library's allocator (glibc's malloc) rather than the mimalloc
      pyarrow bundles, unless ``ARROW_DEFAULT_MEMORY_POOL`` names one: on this project's
      benchmark machine the 1M-row week took 8% less time (median of five runs each way; validation
      27% less) and the 10M-row week 14% less, at an equal or lower peak (benchmarks/RESULTS.md,
      eighteenth session). ``release_freed_memory``'s ``malloc_trim`` then returns Arrow's freed
      pages too.

    The ECB rates file is not one of them: each step gets it from the ``rates`` resource
    (``resources/rates.py``).
    """
    pd.set_option("future.infer_string", True)
    pd.set_option("mode.copy_on_write", True)
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())


def _bucket_url(name: str) -> str | None:
    """A gs://bucket/prefix URL, or None when unset; anything else fails naming the variable (a
    typo must not send customer-level rows to the local disk unnoticed). The value itself is not
    repeated: a URL may carry credentials."""
    value = os.environ.get(name) or None
    if value is None:
        return None
    parsed = urlsplit(value)
    if parsed.scheme != "gs" or not parsed.netloc or parsed.query or "@" in parsed.netloc:
        raise ValueError(
            f"{name} must be gs://bucket/prefix (the bucket of the intermediates), "
            "without query or credentials; unset it to keep them in DATA_DIR"
        )
    return value


def _checked_aliases(value: str) -> str:
    event_aliases(value)
    return value


def settings_from_env(demo: bool = False) -> PipelineSettings:
    """From the environment; ``demo`` (the embedded default) puts the demo's event files under the
    data dir when EVENTS_PATH is unset. With KAFKA_BROKERS and no EVENTS_PATH the consumer lands the
    topic in ``$DATA_DIR/kafka_events``. Elsewhere an unset EVENTS_PATH means there is no event
    source."""
    data_dir = _env("DATA_DIR", "data")
    return PipelineSettings(
        data_dir=data_dir,
        reports_dir=_env("REPORTS_DIR", str(Path(data_dir) / "reports")),
        etl_log_dir=_env("ETL_LOG_DIR", str(Path("logs") / "etl")),
        quality_fail_rate=_rate("QUALITY_FAIL_RATE", "quality_fail_rate"),
        quality_warn_rate=_rate("QUALITY_WARN_RATE", "quality_warn_rate"),
        max_amount_usd=_amount("MAX_AMOUNT_USD", "max_amount_usd"),
        events_max_malformed_share=_rate(
            "EVENTS_MAX_MALFORMED_SHARE", "events_max_malformed_share"
        ),
        events_path=os.environ.get("EVENTS_PATH")
        or (
            str(Path(data_dir) / "kafka_events")
            if kafka_configured()
            else str(Path(data_dir) / "events")
            if demo
            else None
        ),
        event_type_aliases=_checked_aliases(_env("EVENT_TYPE_ALIASES", "{}")),
        late_change_weeks=_weeks("LATE_CHANGE_WEEKS", "late_change_weeks"),
        source_shrink_limit=_rate("SOURCE_SHRINK_LIMIT", "source_shrink_limit"),
        crm_min_records=_count("CRM_MIN_RECORDS", "crm_min_records"),
        previous_week_wait_seconds=_count(
            "PREVIOUS_WEEK_WAIT_SECONDS", "previous_week_wait_seconds"
        ),
        week_wide_steps_at_once=_count("WEEK_WIDE_STEPS_AT_ONCE", "week_wide_steps_at_once"),
        intermediates_url=_bucket_url("CUSTOMER_ASSETS_INTERMEDIATES_URL"),
        storage_emulator_host=os.environ.get("STORAGE_EMULATOR_HOST") or None,
    )
