"""What the demo seed draws its values from: countries and their currencies, currencies with and
without an ECB reference rate and codes that are none, statuses, segments, product words, names
and addresses, the id ranges of unknown customers and products, and the dirty kinds with the
reason the pipeline must give each.

Pure data, apart from ``seed_rows.py`` so that it reads as the generation; the rows depend on
these values and their order, so a change here changes every seeded row.
"""

from __future__ import annotations

#: country -> (share of customers, currency)
COUNTRIES: dict[str, tuple[float, str]] = {
    "US": (0.30, "USD"),
    "GB": (0.10, "GBP"),
    "DE": (0.09, "EUR"),
    "FR": (0.08, "EUR"),
    "ES": (0.04, "EUR"),
    "IT": (0.04, "EUR"),
    "NL": (0.03, "EUR"),
    "JP": (0.07, "JPY"),
    "KR": (0.04, "KRW"),
    "CH": (0.02, "CHF"),
    "SE": (0.02, "SEK"),
    "BR": (0.04, "BRL"),
    "IN": (0.05, "INR"),
    "CA": (0.05, "CAD"),
    "AU": (0.03, "AUD"),
}
#: currency -> (approximate units per USD, ISO 4217 minor units); all have an ECB reference rate.
CURRENCIES: dict[str, tuple[float, int]] = {
    "USD": (1.0, 2),
    "EUR": (0.92, 2),
    "GBP": (0.79, 2),
    "JPY": (150.0, 0),
    "KRW": (1350.0, 0),
    "CHF": (0.88, 2),
    "SEK": (10.5, 2),
    "BRL": (5.0, 2),
    "INR": (83.0, 2),
    "CAD": (1.36, 2),
    "AUD": (1.52, 2),
}
#: Valid ISO 4217 codes (2 minor units) without an ECB reference rate -> units per USD.
UNSUPPORTED_CURRENCIES = {
    "AED": 3.67,
    "NGN": 1500.0,
    "SAR": 3.75,
    "KES": 129.0,
    "EGP": 48.0,
    "PKR": 280.0,
}
#: Not ISO 4217 codes at all ('XXX' and 'XTS' are valid ISO codes, so they are never used).
INVALID_CURRENCIES = ("ABC", "usd ", "EURO", "US$", "DOLLAR", "E")
#: dirty kind -> expected reason code ('duplicate_transaction_id' must stay last).
DIRTY_KINDS: dict[str, str] = {
    "null_customer_id": "MISSING_CUSTOMER_ID",
    "null_amount": "MISSING_AMOUNT",
    "non_positive_amount": "NON_POSITIVE_AMOUNT",
    "invalid_currency": "INVALID_CURRENCY",
    "unsupported_currency": "UNSUPPORTED_CURRENCY",
    "precision_mismatch": "PRECISION_MISMATCH",
    "before_customer_created": "BEFORE_CUSTOMER_CREATED",
    "unknown_customer": "UNKNOWN_CUSTOMER",
    "unknown_product": "UNKNOWN_PRODUCT",
    "duplicate_transaction_id": "DUPLICATE_TRANSACTION_ID",
}
STATUSES = ("completed", "pending", "refunded", "failed")
SEGMENTS = ("consumer", "smb", "enterprise")
SEGMENT_P = [0.75, 0.2, 0.05]
CATEGORIES: dict[str, tuple[str, str, str]] = {
    "Electronics": ("Headphones", "Charger", "Speaker"),
    "Home & Kitchen": ("Kettle", "Blender", "Pan"),
    "Books": ("Novel", "Cookbook", "Atlas"),
    "Clothing": ("Jacket", "Sweater", "Scarf"),
    "Sports": ("Yoga Mat", "Racket", "Bottle"),
    "Toys": ("Puzzle", "Robot Kit", "Plush"),
    "Beauty": ("Serum", "Lotion", "Palette"),
    "Grocery": ("Coffee", "Tea Set", "Olive Oil"),
    "Garden": ("Planter", "Hose", "Shears"),
    "Office": ("Notebook", "Desk Lamp", "Stapler"),
}
ADJECTIVES = ("Classic", "Compact", "Deluxe", "Eco", "Pro", "Smart", "Ultra", "Vintage")
FIRST_NAMES = (
    "olivia",
    "liam",
    "emma",
    "noah",
    "amelia",
    "oliver",
    "sofia",
    "elijah",
    "yuki",
    "hana",
    "lukas",
    "mia",
    "louis",
    "chloe",
    "arjun",
    "priya",
    "lucas",
    "ana",
)
LAST_NAMES = (
    "smith",
    "johnson",
    "brown",
    "garcia",
    "muller",
    "schmidt",
    "martin",
    "bernard",
    "tanaka",
    "sato",
    "kim",
    "park",
    "rossi",
    "silva",
    "patel",
    "sharma",
    "nilsson",
    "wong",
)
STREETS = ("Maple", "Oak", "Cedar", "Elm", "Willow", "Birch", "Harbor", "Mill", "Station", "Park")
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Kingsport", "Bayview")
UNKNOWN_CUSTOMER_BASE = 9_999_000  # unknown customer ids are C9999000..C9999999
UNKNOWN_PRODUCT_BASE = 90_000  # unknown product ids are P90000..P99999
