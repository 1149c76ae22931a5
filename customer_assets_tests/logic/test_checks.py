"""Outcomes of the warning checks on stale rates and silent sources, each passing and failing."""

from datetime import date, timedelta

from customer_assets.logic import checks

WEEK = [date(2026, 11, 16) + timedelta(days=i) for i in range(7)]  # Monday to Sunday


def test_rates_reaching_the_weeks_friday_cover_a_week_that_ends_on_sunday():
    outcome = checks.fx_rates_cover_week(date(2026, 11, 22), date(2026, 11, 20), "fetched")
    assert outcome.passed and outcome.severity == "WARN"


def test_rates_ending_before_the_weeks_last_publication_day_warn():
    outcome = checks.fx_rates_cover_week(date(2026, 11, 22), date(2026, 10, 30), "shipped")
    assert not outcome.passed and outcome.severity == "WARN"
    assert "2026-10-30" in outcome.description and "ECB_RATES_URL" in outcome.description
    assert not checks.fx_rates_cover_week(date(2026, 11, 22), date(2026, 11, 19), "held").passed


def test_a_friday_holiday_moves_the_last_publication_day_to_thursday():
    """Good Friday 2026 is 3 April: the ECB publishes nothing, so rates to Thursday cover that
    week."""
    assert checks.fx_rates_cover_week(date(2026, 4, 5), date(2026, 4, 2), "held").passed
    assert not checks.fx_rates_cover_week(date(2026, 4, 5), date(2026, 4, 1), "held").passed


def test_a_landing_zone_with_a_file_every_day_passes():
    outcome = checks.events_cover_week(WEEK, set(WEEK), 1200, "/landing")
    assert outcome.passed and outcome.severity == "WARN"


def test_days_without_an_event_file_are_named():
    outcome = checks.events_cover_week(WEEK, set(WEEK) - {WEEK[2], WEEK[6]}, 900, "/landing")
    assert not outcome.passed and outcome.severity == "WARN"
    assert "Wed 2026-11-18" in outcome.description and "Sun 2026-11-22" in outcome.description
    assert "Mon 2026-11-16" not in outcome.description


def test_a_week_without_events_warns_with_the_topic_hint():
    outcome = checks.events_cover_week(WEEK, set(), 0, "/landing")
    assert not outcome.passed and outcome.severity == "WARN"
    assert "check the topic and its retention" in outcome.description
    # Files that hold no event of the week (all outside it, or all malformed) are silence too.
    assert not checks.events_cover_week(WEEK, set(WEEK), 0, "/landing").passed


def test_no_landing_zone_expects_no_events():
    assert checks.events_cover_week([], set(), 0, None).passed


def test_a_crm_extract_of_at_least_the_minimum_passes_and_a_thinner_one_warns():
    assert checks.crm_min_records(100, 100, "api").passed
    thin = checks.crm_min_records(12, 100, "api")
    assert not thin.passed and thin.severity == "WARN" and "CRM_MIN_RECORDS" in thin.description
    assert checks.crm_min_records(0, 100, "none").passed  # no CRM configured: nothing expected


def test_crm_records_missing_a_required_field_warn_naming_it():
    required = ("customer_id", "email", "lifetime_value")
    assert checks.crm_required_fields({}, 150, required).passed
    assert checks.crm_required_fields({"phone": 40}, 150, required).passed  # not a required field
    outcome = checks.crm_required_fields({"email": 3, "customer_id": 1, "phone": 40}, 150, required)
    assert not outcome.passed and outcome.severity == "WARN"
    assert "email: 3" in outcome.description and "customer_id: 1" in outcome.description
    assert "phone" not in outcome.description


def test_facts_whose_keys_all_resolve_pass_fact_keys_resolve():
    outcome = checks.fact_keys_resolve(3600, 0, 0)
    assert (
        outcome.passed
        and outcome.severity == "ERROR"
        and "3,600 facts scanned" in outcome.description
    )
    assert checks.fact_keys_resolve(0, 0, 0).passed  # no fact yet


def test_a_dangling_customer_or_product_key_fails_fact_keys_resolve_naming_it():
    customer = checks.fact_keys_resolve(
        3600, 12, 0, 1, 0, {"customer": "C042|20261109", "product": None}
    )
    assert not customer.passed and customer.severity == "ERROR"
    assert (
        "12 with a customer_key" in customer.description
        and "'C042|20261109'" in customer.description
    )
    assert "product key" not in customer.description and "Re-run the weeks" in customer.description
    product = checks.fact_keys_resolve(3600, 0, 5, 0, 2, {"product": "P7|20261102"})
    assert not product.passed and "5 with a product_key" in product.description
    assert "2 product key(s), e.g. 'P7|20261102'" in product.description
    assert not checks.fact_keys_resolve(10, 1, 1, 1, 1).passed
