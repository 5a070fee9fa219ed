"""PII masking on realistic samples: what must be masked, and near-misses that must not be."""

from __future__ import annotations

import logging

import pytest

from apps.runtime.pii import PiiMaskingFilter, iban_valid, luhn_valid, mask

MASKED: list[tuple[str, str, dict[str, int]]] = [
    (
        "Contact me at jane.doe+refunds@example.co.uk or +44 20 7946 0958.",
        "Contact me at [EMAIL] or [PHONE].",
        {"email": 1, "phone": 1},
    ),
    (
        "Call (415) 555-0134, 415-555-0134 or 415.555.0134 after 5pm",
        "Call [PHONE], [PHONE] or [PHONE] after 5pm",
        {"phone": 3},
    ),
    ("tel 0049 30 1234567 / +1-202-555-0173", "tel [PHONE] / [PHONE]", {"phone": 2}),
    ("Mobil: +33 1 42 68 53 00.", "Mobil: [PHONE].", {"phone": 1}),
    (
        "office 020 7946 0958, mobile 0151 234 5678",
        "office [PHONE], mobile [PHONE]",
        {"phone": 2},
    ),
    ("paid with 4111 1111 1111 1111 yesterday", "paid with [CARD] yesterday", {"card": 1}),
    ("card no 5500-0055-5555-5559, exp 12/27", "card no [CARD], exp 12/27", {"card": 1}),
    ("amex 378282246310005", "amex [CARD]", {"card": 1}),
    (
        "IBAN DE89 3704 0044 0532 0130 00 please",
        "IBAN [IBAN] please",
        {"iban": 1},
    ),
    ("to GB82WEST12345698765432.", "to [IBAN].", {"iban": 1}),
    (
        "my account number 12345678 at the bank; acct# 9876 5432 10",
        "my account number [ACCOUNT] at the bank; acct# [ACCOUNT]",
        {"account": 2},
    ),
    (
        "Ticket about order 1003: refund 30.00 EUR to chiara.rossi@example.com, "
        "card 4111111111111111, call +39 06 6982 1234",
        "Ticket about order 1003: refund 30.00 EUR to [EMAIL], card [CARD], call [PHONE]",
        {"email": 1, "card": 1, "phone": 1},
    ),
]

# Numbers a business text is full of, and shapes that are almost personal data but not quite.
NEAR_MISSES = [
    "order 1042 for 39.50 EUR on 2025-03-05 at 10:30",
    "invoice INV-2001 against PO-7001, 1,234.56 EUR",
    "ip 192.168.1.10, version 1.2.3, 1 234 567 units, ref 20250305",
    "dates 05-03-2025 05.03.2025 12/03/2025 2025/03/05",
    "orders 1001 1002 1003 and ticket 881",
    "card 4111-1111-1111-1112 fails its checksum",
    "order number 1234567890123 was placed",
    "IBAN DE89 3704 0044 0532 0130 01 has a wrong check digit",
    "reach @handle or user@localhost or name at example dot com",
    "ISBN 978-3-16-148410-0, amount 0.05, 0,75 EUR, 00:30 UTC",
]


@pytest.mark.parametrize(("text", "expected", "counts"), MASKED)
def test_mask__personal_data__replaced_and_counted(
    text: str, expected: str, counts: dict[str, int]
) -> None:
    masked = mask(text)
    assert masked.text == expected
    assert masked.counts == counts
    assert masked.total == sum(counts.values())


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_mask__near_miss__left_alone(text: str) -> None:
    masked = mask(text)
    assert masked.text == text
    assert masked.counts == {}


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB83 WEST 1234 5698 7654 32")


def test_log_filter__masks_the_formatted_message() -> None:
    # Given a log record whose arguments carry an email and a card number
    record = logging.LogRecord(
        "test", logging.INFO, __file__, 1, "ticket from %s paid with %s",
        ("ana@example.com", "4111 1111 1111 1111"), None,
    )  # fmt: skip
    # When the filter sees it
    assert PiiMaskingFilter().filter(record) is True
    # Then the message that reaches the handler is masked
    assert record.getMessage() == "ticket from [EMAIL] paid with [CARD]"


def test_log_filter__is_installed_on_the_console_handler(caplog: pytest.LogCaptureFixture) -> None:
    from django.conf import settings

    assert "mask_pii" in settings.LOGGING["handlers"]["console"]["filters"]  # type: ignore[index]


def test_log_filter__masks_the_exception_text() -> None:
    import sys

    try:
        raise ValueError("no refund for ana@example.com, card 4111 1111 1111 1111")
    except ValueError:
        record = logging.LogRecord(
            "test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info()
        )
    PiiMaskingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert "ValueError: no refund for [EMAIL], card [CARD]" in formatted
    assert "ana@example.com" not in formatted
