"""An error quoted in a failure's one-line message (``errors.first_line``)."""

import dagster as dg
import psycopg2
import pytest

from customer_assets.errors import first_line
from customer_assets.sources.kafka import KafkaSource


@pytest.mark.parametrize(
    ("error", "text", "line"),
    [
        (ValueError("bad value\nCONTEXT: line 2"), None, "bad value"),
        (ValueError("\n  \n  second line first  \nthird"), None, "second line first"),
        (TimeoutError(), None, "TimeoutError"),  # no text: its type, never an IndexError
        (dg.Failure(description="described\nmore"), None, "described"),
        (psycopg2.OperationalError("server closed\n"), None, "server closed"),
        (RuntimeError("raw secret"), "scrubbed ***\nrest", "scrubbed ***"),
        (RuntimeError("x"), "", "RuntimeError"),
        (None, "only text\n", "only text"),
    ],
)
def test_the_first_line_of_an_error_or_its_type(error, text, line):
    assert first_line(error, text).strip() == line.strip()


def test_a_kafka_error_without_text_still_fails_with_one_line():
    """The one-line failure of a broker error quoted ``text.splitlines()[0]``: an error with no
    text raised IndexError in its place."""
    source = KafkaSource(brokers="127.0.0.1:1", topic="customer-events")
    failure = source._one_line("no answer from the brokers", TimeoutError())
    assert str(failure).startswith("Kafka unavailable: no answer from the brokers at 127.0.0.1:1")
    assert str(failure).endswith(": TimeoutError")
    assert "\n" not in str(failure)
