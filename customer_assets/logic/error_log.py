"""The week's error log: what each step rejected, flagged or lost, as rows analysts and operators
can query."""

from __future__ import annotations

import pandas as pd

COLUMNS = ["week_start", "step", "severity", "reason", "record_count"]

# (step, metadata entry, severity, reason or None when the entry maps reasons to counts)
SOURCES = [
    ("etl/quarantined_transactions", "reasons", "ERROR", None),
    ("etl/transaction_anomalies", "dagster/row_count", "WARNING", "ANOMALY_FLAGGED"),
    ("customer_analytics/fact_transactions_quarantine", "reasons", "ERROR", None),
    ("etl/crm_customers", "invalid_emails", "WARNING", "CRM_INVALID_EMAIL"),
    ("etl/crm_customers", "unparseable_dates", "WARNING", "CRM_UNPARSEABLE_DATE"),
    ("etl/crm_customers", "duplicate_ids", "WARNING", "CRM_DUPLICATE_ID"),
    ("etl/erp_customers", "invalid_emails", "WARNING", "ERP_INVALID_EMAIL"),
    ("etl/erp_customers", "duplicate_ids", "WARNING", "ERP_DUPLICATE_ID"),
    ("etl/customer_event_aggregates", "malformed_lines", "WARNING", "MALFORMED_EVENT_LINE"),
    ("etl/unified_customer_profiles", "unmatched_ids", "WARNING", "UNMATCHED_ID"),
]


def error_rows(week_start: pd.Timestamp, values: dict[tuple[str, str], object]) -> pd.DataFrame:
    """Rows of the log from the week's metadata ``values`` (keyed by step and entry; missing ones
    are skipped): one per step and reason with a non-zero count."""
    rows = []
    for step, entry, severity, reason in SOURCES:
        value = values.get((step, entry))
        counts = (
            value
            if reason is None and isinstance(value, dict)
            else {reason: value}
            if reason
            else {}
        )
        for code, n in sorted(counts.items()):
            if isinstance(n, (int, float)) and n > 0:
                rows.append(
                    {
                        "week_start": week_start,
                        "step": step,
                        "severity": severity,
                        "reason": str(code),
                        "record_count": int(n),
                    }
                )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype(
        {
            "week_start": "datetime64[ns]",
            "step": "str",
            "severity": "str",
            "reason": "str",
            "record_count": "int64",
        }
    )
