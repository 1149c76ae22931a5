"""Identity resolution across CRM, ERP and database records, with hand-computed expectations."""

import pandas as pd

from customer_assets.logic.resolution import IDENTITY_COLUMNS, carry_identity, resolve
from customer_assets.logic.source_records import standardise_erp, week_records


def _ts(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_records_sharing_an_email_phone_or_id_are_one_customer_named_by_its_best_record():
    crm = pd.DataFrame(
        {
            "customer_id": ["C1", "C2"],
            "email_hash": ["e1", "e2"],
            "phone_hash": [None, "p2"],
            "updated_at": [_ts("2026-11-17"), _ts("2026-11-18")],
        }
    )
    erp = pd.DataFrame(
        {
            "customer_id": ["ERP-9", "ERP-8", "ERP-7"],
            "email_hash": ["e1", None, "e7"],
            "phone_hash": [None, "p2", None],
            "updated_at": [_ts("2026-11-19")] * 3,
        }
    )
    mapping = resolve(crm, erp, pd.Series([" c1", "C3", "ERP-7"]))
    rows = {
        (r.source, r.source_customer_id): (r.customer_id, r.matched_on, r.is_primary)
        for r in mapping.itertuples()
    }
    assert rows == {
        # The CRM's C1 is the shop's c1 (the only shop id equal to it but for case): the person
        # takes the CRM's record first, its id spelled as the shop spells it.
        ("crm", "C1"): ("c1", "email", True),
        ("erp", "ERP-9"): ("c1", "email", False),  # same email
        ("database", "c1"): ("c1", "id", False),
        ("crm", "C2"): ("C2", "phone", True),
        ("erp", "ERP-8"): ("C2", "phone", False),  # same phone
        ("database", "C3"): ("C3", "self", True),  # alone
        # The ERP has ids of its own: its ERP-7 is not the shop's ERP-7, and keeps its namespace
        # when it names one.
        ("erp", "ERP-7"): ("erp:ERP-7", "self", True),
        ("database", "ERP-7"): ("ERP-7", "self", True),
    }


def test_a_chain_of_links_is_one_customer_and_the_most_recent_crm_record_wins():
    crm = pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "email_hash": ["e1", None],
            "phone_hash": [None, "p1"],
            "updated_at": [_ts("2026-11-16"), _ts("2026-11-20")],
        }
    )
    erp = pd.DataFrame(
        {
            "customer_id": ["X"],
            "email_hash": ["e1"],
            "phone_hash": ["p1"],
            "updated_at": [_ts("2026-11-21")],
        }
    )
    mapping = resolve(crm, erp, pd.Series([], dtype="str"))
    # A - X - B: one customer
    assert set(mapping["customer_id"]) == {"B"} and mapping["is_primary"].sum() == 1


def test_erp_records_are_standardised_and_hashed_like_the_crm():
    raw = pd.DataFrame(
        {
            "customer_id": [" ERP-1 ", "ERP-1", "ERP-2"],
            "email": ["Ann@Example.com", "ann@example.com", "bad"],
            "phone": ["+1 555 0100", None, "555-0100"],
            "country": ["US", "US", "DE"],
            "updated_at": [_ts("2026-11-16"), _ts("2026-11-18"), _ts("2026-11-17")],
        }
    )
    frame, counts = standardise_erp(raw, "key")
    assert frame["customer_id"].tolist() == [
        "ERP-1",
        "ERP-2",
    ]  # the most recent record of ERP-1 is kept
    assert counts == {"records": 3, "invalid_emails": 1, "duplicate_ids": 1}
    assert frame["email_hash"].str.fullmatch(r"[0-9a-f]{64}").iloc[0] and pd.isna(
        frame["email_hash"].iloc[1]
    )
    assert frame["phone_hash"].iloc[1] is not None and "555" not in frame["phone_hash"].iloc[1]


def _crm(ids, emails=None, phones=None, day="2026-11-03"):
    n = len(ids)
    return pd.DataFrame(
        {
            "customer_id": ids,
            "email_hash": emails or [None] * n,
            "phone_hash": phones or [None] * n,
            "updated_at": [_ts(day)] * n,
        }
    )


NONE = _crm([])
W1, W2, W3 = (pd.Timestamp(d) for d in ("2026-11-02", "2026-11-09", "2026-11-16"))


def _person(identity, source, source_id):
    row = identity[(identity["source"] == source) & (identity["source_customer_id"] == source_id)]
    assert len(row) == 1, row
    return row["customer_id"].iloc[0]


def test_a_person_keeps_its_id_in_every_week_whichever_source_sees_them():
    """Issue 24: the CRM's C7 in week 1, the same person as ERP E7 (same email) alone in week 2: one
    person, C7, in both weeks, though week 2 alone would have named them erp:E7."""
    week1 = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(_crm(["C7"], ["e7"]), NONE, pd.Series(["C7"])),
        W1,
    )
    week2 = carry_identity(
        week1.identity,
        week_records(NONE, _crm(["E7"], ["e7"], day="2026-11-10"), pd.Series([], dtype="str")),
        W2,
    )
    assert _person(week1.identity, "crm", "C7") == "C7"
    assert {
        _person(week2.identity, s, i) for s, i in (("crm", "C7"), ("erp", "E7"), ("database", "C7"))
    } == {"C7"}
    assert week2.merges.empty and week2.counts["new_persons"] == 0
    assert set(resolve(NONE, _crm(["E7"], ["e7"]), pd.Series([], dtype="str"))["customer_id"]) == {
        "erp:E7"
    }
    # the record seen again keeps the week it was first seen in
    crm7 = week2.identity[week2.identity["source"] == "crm"].iloc[0]
    assert crm7["first_seen_week"] == W1 and crm7["last_seen_week"] == W1


def test_two_persons_found_to_be_one_merge_into_the_best_records_person_and_the_merge_is_recorded():
    week1 = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(_crm(["A1", "B2"], ["ea", "eb"], ["pa", "pb"]), NONE, pd.Series(["A1", "B2"])),
        W1,
    )
    assert set(week1.identity["customer_id"]) == {"A1", "B2"}
    # week 2: an ERP record with A1's email and B2's phone; B2's CRM record is the more recent of
    # the two
    week2 = carry_identity(
        week1.identity,
        week_records(
            _crm(["B2"], ["eb"], ["pb"], day="2026-11-11"),
            _crm(["E1"], ["ea"], ["pb"]),
            pd.Series(["A1"]),
        ),
        W2,
    )
    assert set(week2.identity["customer_id"]) == {"B2"}
    assert week2.merges.to_dict("records") == [
        {"retired_id": "A1", "surviving_id": "B2", "matched_on": "email+phone"}
    ]
    # a third week changes nothing: B2 stays, no merge is recorded again
    week3 = carry_identity(week2.identity, week_records(NONE, NONE, pd.Series(["A1", "B2"])), W3)
    assert set(week3.identity["customer_id"]) == {"B2"} and week3.merges.empty


def test_ids_of_one_source_equal_but_for_case_stay_two_persons_and_are_counted():
    """Issue 21 item 3: C0000001 and c0000001 in the shop are two customers (ID_COLLISION), in the
    week they meet and when the second appears weeks later."""
    together = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(NONE, NONE, pd.Series(["C0000001", "c0000001"])),
        W1,
    )
    assert {_person(together.identity, "database", i) for i in ("C0000001", "c0000001")} == {
        "C0000001",
        "c0000001",
    }
    assert together.counts["id_collisions"] == 1
    later = carry_identity(
        together.identity.iloc[:0], week_records(NONE, NONE, pd.Series(["C0000001"])), W1
    )
    later = carry_identity(later.identity, week_records(NONE, NONE, pd.Series(["c0000001"])), W2)
    assert _person(later.identity, "database", "c0000001") == "c0000001"
    assert _person(later.identity, "database", "C0000001") == "C0000001" and later.merges.empty


def test_a_crm_id_names_the_shop_customer_it_spells_and_collisions_are_counted_in_their_week():
    """Issue 21 item 3 with the CRM: the CRM's c0000001 is the shop's c0000001 when the shop has
    both spellings (and its lifetime value is that customer's); with only C0000002 in the shop, the
    CRM's c0000002 is it."""
    both = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(
            _crm(["c0000001", "C0000001"], ["ea", "eb"]), NONE, pd.Series(["C0000001", "c0000001"])
        ),
        W1,
    )
    assert (
        _person(both.identity, "crm", "c0000001")
        == _person(both.identity, "database", "c0000001")
        == "c0000001"
    )
    assert (
        _person(both.identity, "crm", "C0000001")
        == _person(both.identity, "database", "C0000001")
        == "C0000001"
    )
    # the shop's pair; the CRM's ids are references to them
    assert both.counts["id_collisions"] == 1
    one = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(_crm(["c0000002"], ["ec"]), NONE, pd.Series(["C0000002"])),
        W1,
    )
    assert set(one.identity["customer_id"]) == {"C0000002"} and one.counts["id_collisions"] == 0
    # a week that sees neither of a colliding pair does not count it again
    later = carry_identity(both.identity, week_records(NONE, NONE, pd.Series(["C0000009"])), W2)
    assert later.counts["id_collisions"] == 0


def test_a_week_without_records_carries_the_identity_as_it_was():
    week1 = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(_crm(["A1"], ["ea"]), NONE, pd.Series(["A1", "B2"])),
        W1,
    )
    empty = carry_identity(week1.identity, week_records(NONE, NONE, pd.Series([], dtype="str")), W2)
    pd.testing.assert_frame_equal(
        empty.identity.reset_index(drop=True), week1.identity.reset_index(drop=True)
    )
    assert empty.merges.empty and empty.counts["persons"] == 2 and empty.counts["new_persons"] == 0
    one = carry_identity(week1.identity, week_records(NONE, NONE, pd.Series(["B2"])), W2)
    assert set(one.identity["customer_id"]) == {"A1", "B2"} and len(one.identity) == 3


def test_frames_handed_over_are_let_go_once_copied_and_give_the_same_identity(monkeypatch):
    """The identity step hands its carried and week records over (``carry_handed_over``): they are
    gone before the linking starts, not held to the end, and the identity is carry_identity's."""
    import gc
    import weakref

    from customer_assets.logic import resolution

    week1 = carry_identity(
        pd.DataFrame(columns=IDENTITY_COLUMNS),
        week_records(_crm(["A1", "B2"], ["ea", "eb"], ["pa", "pb"]), NONE, pd.Series(["A1"])),
        W1,
    )

    def week2_records():
        return week_records(_crm(["E1"], ["ea"], day="2026-11-10"), NONE, pd.Series(["B2"]))

    expected = carry_identity(week1.identity.copy(), week2_records(), W2)
    handed = {"prior": week1.identity.copy(), "records": week2_records()}
    refs = [weakref.ref(frame) for frame in handed.values()]
    alive_while_linking = []
    touched = resolution._touched

    def watched(*args):
        gc.collect()
        alive_while_linking.extend(ref() is not None for ref in refs)
        return touched(*args)

    monkeypatch.setattr(resolution, "_touched", watched)
    got = resolution.carry_handed_over(handed, W2)
    assert handed == {} and alive_while_linking == [False, False]
    pd.testing.assert_frame_equal(got.identity, expected.identity)
    pd.testing.assert_frame_equal(got.merges, expected.merges)
    assert got.counts == expected.counts and got.counts["week_records"] == 2
