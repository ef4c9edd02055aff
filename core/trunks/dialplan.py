"""Telephone numbers as this PBX reads them: is it a number, what form is canonical, how far
does it reach (local, national, international), and what does a carrier get in its URI.

Everything here follows `DialplanSettings`; DIDs are stored in the same canonical form
(`Dialplan.did_number`), so a DID and a dialled number compare as equals: with a country code
configured that is the E.164 number without the `+` (`+44 1632 960001`, `0044 1632 960001`,
`01632 960001` and `441632960001` all give `441632960001`).

The class decides what an outbound policy allows (core/trunks/tollfraud.py), so it must not be
fooled by the way a number is written:

    +CC… or <international prefix>CC…   international, or national when CC is our own code
    <national prefix>…                  national
    digits, at most MAX_LOCAL_DIGITS    local (a subscriber number without area code)
    longer digits                       E.164 without the `+` (how carriers read them):
                                        national when they start with our code, else
                                        international

Without a country code, `+`/`00` numbers are international and national numbers stay as
dialled. Nothing here does I/O; it is pure functions of the settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import DialplanSettings

LOCAL = "local"
NATIONAL = "national"
INTERNATIONAL = "international"
NUMBER_CLASSES = (LOCAL, NATIONAL, INTERNATIONAL)  # narrowest first

# RFC 3966 §5.1.1 visual separators, which people and carriers put in numbers.
_VISUAL_SEPARATORS = str.maketrans("", "", " -.()/\t")
MAX_NUMBER_DIGITS = 20  # E.164 allows 15; room for prefixes, none for abuse
# A number dialled with no prefix and more digits than this is no local (subscriber) number:
# it is read as E.164 without the "+", which is how carriers treat it, so a "local only" user
# cannot reach abroad by leaving the prefix off. Local numbers run to 8 digits in most plans.
MAX_LOCAL_DIGITS = 8


@dataclass(frozen=True, slots=True)
class DialledNumber:
    """A telephone number read under the dialplan.

    `canonical` is the form DIDs are stored in; `number_class` is one of `NUMBER_CLASSES`;
    `e164` says whether `canonical` is a full international number (country code first).
    """

    dialled: str  # as it came, separators removed
    canonical: str
    number_class: str
    e164: bool

    @property
    def carrier_form(self) -> str:
        """What a carrier gets as the Request-URI user: `+` and the E.164 digits when the
        number is complete, otherwise the digits as dialled (RFC 3966 global vs local)."""
        return "+" + self.canonical if self.e164 else self.canonical


class Dialplan:
    """The dialplan settings with the reading rules above. Immutable; cheap to share."""

    __slots__ = ("country_code", "international_prefix", "max_local_digits", "national_prefix")

    def __init__(
        self, settings: DialplanSettings | None = None, max_local_digits: int = MAX_LOCAL_DIGITS
    ) -> None:
        settings = settings or DialplanSettings()
        self.country_code = settings.country_code
        self.national_prefix = settings.national_prefix
        self.international_prefix = settings.international_prefix
        self.max_local_digits = max_local_digits

    # -- numbers ----------------------------------------------------------------------------
    def parse(self, text: str | None) -> DialledNumber | None:
        """The number `text` spells, or None when it is not a telephone number (a username,
        an empty string, a number with nothing after its prefix)."""
        if not text:
            return None
        compact = text.strip().translate(_VISUAL_SEPARATORS)
        international = compact.startswith("+")
        digits = compact[1:] if international else compact
        if not digits or not digits.isascii() or not digits.isdigit():
            return None
        if len(digits) > MAX_NUMBER_DIGITS:
            return None
        country = self.country_code
        prefix = self.international_prefix
        if not international and prefix and digits.startswith(prefix):
            international = True
            digits = digits[len(prefix) :]
        if international:
            return self._full_number(compact, digits)
        national = self.national_prefix
        if national and digits.startswith(national) and len(digits) > len(national):
            if country:
                return DialledNumber(compact, country + digits[len(national) :], NATIONAL, True)
            return DialledNumber(compact, digits, NATIONAL, False)
        if len(digits) <= self.max_local_digits:
            return DialledNumber(compact, digits, LOCAL, False)
        # Longer than a local number and no prefix: E.164 without the "+".
        return self._full_number(compact, digits)

    def _full_number(self, compact: str, digits: str) -> DialledNumber | None:
        """A number that starts with its country code."""
        country = self.country_code
        if not digits or digits == country:
            return None
        number_class = NATIONAL if country and digits.startswith(country) else INTERNATIONAL
        return DialledNumber(compact, digits, number_class, True)

    def canonical(self, text: str) -> str | None:
        """The canonical form of a number (DID look-ups), or None for anything else."""
        number = self.parse(text)
        return None if number is None else number.canonical

    def did_number(self, text: str) -> str:
        """The form a DID is stored in: `canonical`, the form an inbound call's Request-URI
        is looked up in, so whatever an operator types meets what the carrier sends. A prefix
        on its own (the national prefix, the country code) is refused: no carrier delivers
        calls to it. Raises `ValueError` with a sentence naming the number."""
        number = self.parse(text)
        if number is None:
            raise ValueError(f"{text!r} is not a telephone number")
        if number.dialled == self.national_prefix or number.canonical == self.country_code:
            raise ValueError(f"{text!r} is only a prefix, not a telephone number")
        return number.canonical

    # -- prefixes ---------------------------------------------------------------------------
    def prefix_matches(self, number: DialledNumber, prefix: str) -> bool:
        """Does an allow/deny prefix, written as an admin would dial it, cover `number`?

        Prefixes compare in canonical form, so a deny of `0900` also stops `+44900…` and
        `0044900…` (with country code 44): a prefix must not be dodged by writing the number
        another way. `+` or the international prefix alone means every international number;
        the national prefix alone means every national one. A prefix that is not digits
        matches nothing.
        """
        compact = prefix.strip().translate(_VISUAL_SEPARATORS)
        if compact in ("+", self.international_prefix):
            return number.number_class == INTERNATIONAL
        if compact == self.national_prefix:
            return number.number_class == NATIONAL
        canonical = self.canonical_prefix(compact)
        return canonical is not None and number.canonical.startswith(canonical)

    def canonical_prefix(self, prefix: str) -> str | None:
        """A dial prefix in canonical form (`0900` → `44900` with country code 44), or None
        when it is not made of digits."""
        compact = prefix.strip().translate(_VISUAL_SEPARATORS)
        international = compact.startswith("+")
        digits = compact[1:] if international else compact
        if not digits or not digits.isascii() or not digits.isdigit():
            return None
        if international:
            return digits
        if self.international_prefix and digits.startswith(self.international_prefix):
            rest = digits[len(self.international_prefix) :]
            return rest or None
        national = self.national_prefix
        if self.country_code and national and digits.startswith(national):
            return self.country_code + digits[len(national) :]
        return digits
