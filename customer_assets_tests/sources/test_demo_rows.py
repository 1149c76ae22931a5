"""The demo's synthetic customers: contact details that are one customer's only, at any scale."""

import numpy as np
import pandas as pd

from customer_assets.demo.seed_rows import customer_table
from customer_assets.demo.seed_vocabulary import UNKNOWN_CUSTOMER_BASE
from customer_assets.logic.identity import phone_digits


def _customers(first_nums: list[int], each: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    zeros = np.zeros(each, dtype=np.int64)
    return pd.concat(
        [
            customer_table(rng, first, zeros, zeros, zeros).to_pandas(types_mapper=pd.ArrowDtype)
            for first in first_nums
        ],
        ignore_index=True,
    )


def test_no_two_customers_share_a_phone_or_an_email_at_any_scale():
    """Identity resolution links records by phone: customers sharing one would be counted as one
    person. Numbers past 100,000 (the benchmarks' 200,000 to 3.3M customers) once wrapped around
    to the phones of the first 100,000."""
    customers = _customers([1, 99_998, 199_998, 1_099_998, UNKNOWN_CUSTOMER_BASE - 6])
    assert customers["customer_id"].is_unique
    assert phone_digits(customers["phone"].astype("str")).is_unique
    assert customers["email"].str.lower().is_unique


def test_the_first_customers_keep_their_phones():
    """Seeds of up to 100,000 customers (the embedded demo's 5,000) are unchanged."""
    customers = _customers([1, 99_995])
    nums = [1, 2, 3, 4, 5, 99_995, 99_996, 99_997, 99_998, 99_999]
    assert customers["phone"].tolist() == [f"+1-555-01{n:05d}" for n in nums]
