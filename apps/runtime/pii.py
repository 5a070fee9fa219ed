"""Masking personal data before text reaches a model provider or a log.

What is masked, and how each kind is told apart from the numbers a business text is full of
(order numbers, amounts, dates, invoice references):

- IBANs: two letters, two check digits, 11 to 30 letters or digits (spaces allowed between
  groups of four); masked only when the ISO 13616 mod-97 check passes.
- card numbers: 13 to 19 digits, optionally grouped by spaces or dashes; masked only when the
  Luhn check passes.
- account numbers: digits following the words "account", "acct" or "a/c" (with "no", "number"
  or "#"); a bare number is not taken for an account on its own.
- email addresses: local part, "@", a domain with a dot-separated top-level domain.
- phone numbers: international (+ or 00 then the country code, 8 to 15 digits in all), US style
  ((415) 555-0134, 415-555-0134, 415.555.0134) or national with a trunk 0 (020 7946 0958),
  9 to 15 digits. Dates, times, amounts and IP addresses do not have these shapes.

Each call returns the masked text and how many of each kind it replaced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

KINDS = ("iban", "card", "account", "email", "phone")
PLACEHOLDER = {
    "iban": "[IBAN]",
    "card": "[CARD]",
    "account": "[ACCOUNT]",
    "email": "[EMAIL]",
    "phone": "[PHONE]",
}

_IBAN = re.compile(
    r"(?<![A-Za-z0-9])([A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,7}(?:[ ]?[A-Za-z0-9]{1,3})?)"
    r"(?![A-Za-z0-9])"
)
_CARD = re.compile(r"(?<![\d.,-])(\d(?:[ -]?\d){12,18})(?![\d]|[.,]\d)")
_ACCOUNT = re.compile(
    r"(?i)\b(?:account|acct|a/c)\.?(?:[ ]?(?:no\.?|number|nr\.?|#))?[ ]?[:#]?[ ]?"
    r"(\d(?:[ -]?\d){5,16})(?!\d)"
)
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])"
)
_PHONE_INTERNATIONAL = re.compile(
    r"(?<![\w+])(?:\+|00)[1-9]\d{0,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}(?![\w])"
)
_PHONE_US = re.compile(
    r"(?<![\w(])(?:\(\d{3}\)[ ]?\d{3}[ .-]\d{4}|\d{3}-\d{3}-\d{4}|\d{3}\.\d{3}\.\d{4})(?![\w.])"
)
_PHONE_NATIONAL = re.compile(r"(?<!\w)(?<!\d[.,/:-])0\d{1,4}(?:[ -]\d{2,8}){1,3}(?!\w|[.,/:-]\d)")


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of card numbers (digits only)."""
    if not number.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers (A=10), mod 97
    must be 1."""
    iban = candidate.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    if not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


@dataclass
class Masked:
    text: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _card(found: str) -> bool:
    digits = _digits(found)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _international_phone(found: str) -> bool:
    return 8 <= len(_digits(found)) <= 15


def _national_phone(found: str) -> bool:
    return 9 <= len(_digits(found)) <= 12


def _always(found: str) -> bool:
    return True


# (kind, pattern, the group that holds the value, check; None: only claims the text)
_RULES: tuple[tuple[str, re.Pattern[str], int, Callable[[str], bool]], ...] = (
    ("iban", _IBAN, 1, iban_valid),
    ("card", _CARD, 1, _card),
    ("account", _ACCOUNT, 1, _always),
    ("email", _EMAIL, 0, _always),
    ("phone", _PHONE_INTERNATIONAL, 0, _international_phone),
    ("phone", _PHONE_US, 0, _always),
    ("phone", _PHONE_NATIONAL, 0, _national_phone),
)


def mask(text: str) -> Masked:
    """`text` with every email, phone, card, IBAN and account number replaced by a placeholder
    ([EMAIL], [PHONE], [CARD], [IBAN], [ACCOUNT]) and the count of each kind replaced."""
    counts: dict[str, int] = {}
    if not text:
        return Masked(text, counts)
    # The most specific shapes claim their text first: an IBAN or a card number also looks like
    # a phone number. Something shaped like an IBAN whose check fails is claimed too, unmasked,
    # so that its digits are not then taken for a phone number.
    claimed: list[tuple[int, int, str | None]] = []

    def free(start: int, end: int) -> bool:
        return all(
            end <= taken_start or start >= taken_end for taken_start, taken_end, _ in claimed
        )

    for kind, pattern, group, check in _RULES:
        for match in pattern.finditer(text):
            start, end = match.span(group)
            if not free(start, end):
                continue
            if check(match.group(group)):
                claimed.append((start, end, kind))
            elif kind == "iban":
                claimed.append((start, end, None))
    out: list[str] = []
    position = 0
    for start, end, found in sorted(claimed):
        if found is None:
            continue
        out.append(text[position:start])
        out.append(PLACEHOLDER[found])
        counts[found] = counts.get(found, 0) + 1
        position = end
    out.append(text[position:])
    return Masked("".join(out), counts)


def mask_text(text: str) -> str:
    return mask(text).text


class PiiMaskingFilter(logging.Filter):
    """A logging filter that masks the formatted message of every record (and its exception
    text), so personal data never reaches a log line whatever the code logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = mask(message)
        if masked.total:
            record.msg = masked.text
            record.args = None
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            masked_text = mask_text(text)
            if masked_text != text:
                # Formatters print exc_text when there is no exc_info to format afresh (the JSON
                # formatter would otherwise format the unmasked exception itself).
                record.exc_text = masked_text
                record.exc_info = None
        return True
