"""ISO 4217 facts and ECB conversion, including weekends and rates past the end of the file."""

from datetime import date

import pandas as pd
import pytest

from customer_assets.logic import currency


def test_minor_units_come_from_iso_4217():
    units = currency.iso4217_minor_units()
    assert units["USD"] == 2 and units["JPY"] == 0 and units["KRW"] == 0 and units["KWD"] == 3
    assert "ABC" not in units


def test_supported_currencies_are_the_ones_quoted_today():
    supported = currency.supported_currencies()
    assert {"USD", "EUR", "JPY", "GBP", "KRW"} <= supported
    assert "AED" not in supported and "CYP" not in supported  # never quoted / discontinued in 2008


def test_weekend_uses_the_last_business_day_rate():
    rates = currency.ecb_usd_rates()
    friday = pd.Timestamp("2025-06-13")
    ts = pd.Series(pd.to_datetime(["2025-06-14 12:00", "2025-06-13 09:00"], utc=True))
    out = currency.convert_to_usd(pd.Series([100.0, 100.0]), pd.Series(["EUR", "EUR"]), ts)
    assert out["fx_rate_date"].tolist() == [friday, friday]
    assert out["amount_usd"].iloc[0] == pytest.approx(100 * rates.loc[friday, "EUR"])


def test_usd_is_one_and_cross_rates_go_through_the_euro():
    day = pd.Timestamp("2025-06-13")
    ts = pd.Series(pd.to_datetime(["2025-06-13 10:00"] * 2, utc=True))
    out = currency.convert_to_usd(pd.Series([10.0, 1000.0]), pd.Series(["USD", "JPY"]), ts)
    assert out["fx_rate"].iloc[0] == pytest.approx(1.0)
    ecb = pd.read_csv(currency.rates_file(), index_col="Date", parse_dates=["Date"])
    assert out["amount_usd"].iloc[1] == pytest.approx(
        1000 / ecb.loc[day, "JPY"] * ecb.loc[day, "USD"]
    )


def test_days_after_the_file_carry_the_last_rate_and_say_so():
    last = currency.last_rate_date()
    ts = pd.Series([pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=20)])
    out = currency.convert_to_usd(pd.Series([1.0]), pd.Series(["GBP"]), ts)
    assert out["fx_rate_date"].iloc[0] == pd.Timestamp(last)
    assert out["amount_usd"].iloc[0] > 1.0


def test_unknown_currency_gives_no_rate():
    ts = pd.Series(pd.to_datetime(["2025-06-13 10:00"], utc=True))
    out = currency.convert_to_usd(pd.Series([1.0]), pd.Series(["AED"]), ts)
    assert out["amount_usd"].isna().all()


def test_daily_table_covers_every_calendar_day():
    table = currency.daily_rate_table(date(2025, 6, 1), date(2025, 6, 30), ["EUR", "JPY"])
    assert len(table) == 60 and table["usd_per_unit"].notna().all()


def test_a_cached_rate_table_is_handed_out_as_a_copy():
    first = currency.daily_rate_table(date(2025, 6, 1), date(2025, 6, 7), ["EUR", "JPY"])
    first.loc[:, "usd_per_unit"] = 0.0  # a caller changing its table
    again = currency.daily_rate_table(date(2025, 6, 1), date(2025, 6, 7), ["EUR", "JPY"])
    assert (again["usd_per_unit"] > 0).all() and len(again) == 14


def test_something_that_is_not_the_ecb_file_is_refused(tmp_path):
    import zipfile

    not_a_zip = tmp_path / "page.zip"
    not_a_zip.write_text("<html>Service unavailable</html>")
    no_rates = tmp_path / "other.zip"
    with zipfile.ZipFile(no_rates, "w") as archive:
        archive.writestr("data.csv", "Date,GBP\n2026-11-20,0.85\n")
    for path in (not_a_zip, no_rates):
        with pytest.raises(currency.RatesFileError, match="not the ECB's eurofxref-hist.zip"):
            currency.read_rates_file(str(path))


def test_a_rates_file_replaced_at_the_same_path_is_read_again(tmp_path):
    """The refresh swaps a new file in under the same name: a process must not keep the old one's
    rates."""
    import shutil
    import zipfile

    path = tmp_path / "eurofxref-hist.zip"
    shutil.copyfile(currency.CURRENCY_FILE, path)
    assert currency.last_rate_date(str(path)) == currency.last_rate_date(currency.CURRENCY_FILE)
    with zipfile.ZipFile(currency.CURRENCY_FILE) as archive:
        text = archive.read(archive.namelist()[0]).decode()
    header, newest = text.splitlines()[:2]
    later = "2026-11-20" + newest[newest.index(",") :]
    replacement = tmp_path / "new.zip"
    with zipfile.ZipFile(replacement, "w") as archive:
        archive.writestr(
            "eurofxref-hist.csv", "\n".join([header, later, *text.splitlines()[1:]]) + "\n"
        )
    replacement.replace(path)
    assert currency.last_rate_date(str(path)) == date(2026, 11, 20)


def test_the_last_publication_day_skips_weekends_and_target_holidays():
    # Sunday -> Friday
    assert currency.last_publication_day(date(2026, 11, 22)) == date(2026, 11, 20)
    assert currency.last_publication_day(date(2026, 11, 18)) == date(2026, 11, 18)
    # Easter Monday -> Thursday
    assert currency.last_publication_day(date(2026, 4, 6)) == date(2026, 4, 2)
    assert currency.last_publication_day(date(2026, 12, 27)) == date(2026, 12, 24)
