"""``keyed_hash`` is HMAC-SHA256 as the standard library computes it, for any key and value: the
hashes it wrote in earlier weeks (and the erasure suppression list's) must keep matching."""

import hashlib
import hmac

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from customer_assets.logic.identity import keyed_hash

# keys about the block size (64 bytes) and past it, which RFC 2104 hashes first
KEYS = st.one_of(
    st.text(min_size=1, max_size=8),
    st.text(min_size=60, max_size=70),
    st.binary(min_size=63, max_size=130).map(lambda b: b.hex()),
)


@settings(max_examples=200, deadline=None)
@given(key=KEYS, values=st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=20))
def test_keyed_hash_is_the_standard_librarys_hmac_sha256(key, values):
    hashed = keyed_hash(pd.Series(values, dtype="str"), key)
    expected = [
        None if v is None else hmac.new(key.encode(), v.encode(), hashlib.sha256).hexdigest()
        for v in values
    ]
    assert [None if pd.isna(h) else h for h in hashed] == expected
