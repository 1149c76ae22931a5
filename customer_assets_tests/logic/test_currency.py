"""ISO 4217 facts and ECB conversion, including weekends and rates past the end of the file, with
the rates file named by the caller (None: the shipped one)."""

import shutil
import zipfile
from datetime import date, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    ecb = pd.read_csv(currency.CURRENCY_FILE, index_col="Date", parse_dates=["Date"])
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


def rates_zip(path, day: date, factor: float) -> str:
    """The shipped ECB file with a publication for ``day`` on top: the newest row's rates, every
    currency but USD worth ``factor`` times as many units per euro (so ``1/factor`` as many
    dollars)."""
    with zipfile.ZipFile(currency.CURRENCY_FILE) as archive:
        lines = archive.read(archive.namelist()[0]).decode().splitlines()
    header, newest = lines[0].split(","), lines[1].split(",")
    row = [day.isoformat()]
    for name, value in zip(header[1:], newest[1:], strict=True):
        scaled = name.strip() != "USD" and value.strip() not in ("", "N/A")
        row.append(str(float(value) * factor) if scaled else value)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("eurofxref-hist.csv", "\n".join([lines[0], ",".join(row), *lines[1:]]))
    return str(path)


def test_each_call_converts_with_the_rates_file_it_is_given(tmp_path):
    """No file is held between calls: two files give two USD amounts, and the default is the
    shipped file whatever was asked before."""
    day = date(2026, 11, 20)
    plain = rates_zip(tmp_path / "plain.zip", day, 1.0)
    halved = rates_zip(tmp_path / "halved.zip", day, 2.0)
    ts = pd.Series([pd.Timestamp("2026-11-20 12:00", tz="UTC")])

    def usd(rates_path=None) -> float:
        out = currency.convert_to_usd(pd.Series([100.0]), pd.Series(["GBP"]), ts, rates_path)
        return float(out["amount_usd"].iloc[0])

    assert usd(halved) == pytest.approx(usd(plain) / 2)
    # The shipped file carries its last rates forward: the same as ``plain``'s copy of them.
    shipped_gbp = currency.ecb_usd_rates()["GBP"].dropna().iloc[-1]
    assert usd() == pytest.approx(100 * shipped_gbp) and usd() == pytest.approx(usd(plain))
    assert currency.last_rate_date(halved) == day
    assert currency.last_rate_date() == currency.last_rate_date(currency.CURRENCY_FILE) < day
    table = currency.daily_rate_table(day, day, ["GBP"], rates_path=halved)
    assert table["usd_per_unit"].iloc[0] * 100 == pytest.approx(usd(halved))
    assert "GBP" in currency.supported_currencies(halved)
    assert not hasattr(currency, "use_rates_file") and not hasattr(currency, "_rates_file")


@settings(max_examples=60, deadline=None)
@given(
    first=st.dates(min_value=date(1998, 6, 1), max_value=date(2027, 12, 31)),
    span=st.sampled_from([0, 1, 3, 6, 30, 400]),
    picks=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=8),
)
def test_each_days_rate_is_its_currencys_last_publication_on_or_before_it(first, span, picks):
    """Checked against the definition, a day at a time: windows before a currency's first
    publication, over weekends and holidays, and after the file ends; currencies in any order and
    one the file does not quote."""
    rates = currency.ecb_usd_rates()
    codes = sorted(rates.columns)
    wanted = [codes[i % len(codes)] for i in picks] + ["XXX"]
    last = first + timedelta(days=span)
    table = currency.daily_rate_table(first, last, wanted)
    expected = []
    for code in sorted(set(wanted) & set(codes)):
        published = rates[code].dropna()
        for day in pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="D"):
            before = published[published.index <= day]
            if len(before):
                expected.append((code, day, float(before.iloc[-1]), before.index[-1]))
    got = sorted(
        zip(table["currency"], table["day"], table["usd_per_unit"], table["rate_date"], strict=True)
    )
    assert got == sorted(expected)
