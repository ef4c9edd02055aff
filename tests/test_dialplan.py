"""Numbers read by the dialplan (core/trunks/dialplan.py): canonical forms, classes, prefixes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.settings import DialplanSettings
from core.trunks.dialplan import INTERNATIONAL, LOCAL, NATIONAL, Dialplan

UK = Dialplan(DialplanSettings(country_code="44", national_prefix="0", international_prefix="00"))
BARE = Dialplan(DialplanSettings(country_code="", national_prefix="0", international_prefix="00"))
US = Dialplan(DialplanSettings(country_code="1", national_prefix="1", international_prefix="011"))


@pytest.mark.parametrize(
    ("dialled", "canonical", "number_class", "carrier_form"),
    [
        ("+44 1632 960001", "441632960001", NATIONAL, "+441632960001"),
        ("0044 1632 960001", "441632960001", NATIONAL, "+441632960001"),
        ("01632 960001", "441632960001", NATIONAL, "+441632960001"),
        ("441632960001", "441632960001", NATIONAL, "+441632960001"),
        ("+33 1 23 45 67 89", "33123456789", INTERNATIONAL, "+33123456789"),
        ("0033123456789", "33123456789", INTERNATIONAL, "+33123456789"),
        ("960001", "960001", LOCAL, "960001"),
        ("(0)1632-960001", "441632960001", NATIONAL, "+441632960001"),
    ],
)
def test_uk_numbers(dialled: str, canonical: str, number_class: str, carrier_form: str) -> None:
    number = UK.parse(dialled)
    assert number is not None
    assert number.canonical == canonical
    assert number.number_class == number_class
    assert number.carrier_form == carrier_form


def test_long_number_without_prefix_is_not_local() -> None:
    """Leaving the prefix off must not turn a satellite number into a 'local' call."""
    number = UK.parse("881612345678")
    assert number is not None
    assert number.number_class == INTERNATIONAL
    assert number.carrier_form == "+881612345678"
    eight = UK.parse("12345678")
    assert eight is not None and eight.number_class == LOCAL


def test_without_country_code() -> None:
    national = BARE.parse("01632 960001")
    assert national is not None
    assert (national.canonical, national.number_class) == ("01632960001", NATIONAL)
    assert national.carrier_form == "01632960001"
    abroad = BARE.parse("+44 1632 960001")
    assert abroad is not None
    assert (abroad.canonical, abroad.number_class) == ("441632960001", INTERNATIONAL)


def test_other_prefixes() -> None:
    """North American style: national prefix 1, international 011."""
    abroad = US.parse("011 44 1632 960001")
    assert abroad is not None and abroad.number_class == INTERNATIONAL
    assert abroad.canonical == "441632960001"
    home = US.parse("1 555 0100")
    assert home is not None and home.number_class == NATIONAL
    assert home.canonical == "15550100"


@pytest.mark.parametrize("text", ["", "alice", "+", "00", "12a4", "+44", "0044", "1" * 21, None])
def test_not_numbers(text: str | None) -> None:
    assert UK.parse(text) is None


# --- DIDs: the one rule for the form a DID is stored in -----------------------------------


@pytest.mark.parametrize(
    "number",
    ["+44 1632 960001", "0044 1632 960001", "01632 960001", "441632960001", "(01632) 960-001"],
)
def test_dids_with_a_country_code_share_one_form(number: str) -> None:
    assert UK.did_number(number) == "441632960001"


def test_dids_without_a_country_code() -> None:
    assert BARE.did_number("+44 1632 960001") == "441632960001"
    assert BARE.did_number("0044 1632 960001") == "441632960001"
    assert BARE.did_number("01632 960001") == "01632960001"
    assert BARE.did_number("200") == "200"


@pytest.mark.parametrize(
    "number",
    [
        *("", " ", "+", "abc", "12#4", "00", "0", "44", "+44", "12\n3"),
        "1" * 21,
        "0" * 10_000,
        "\uff11\uff12\uff13",  # fullwidth digits: isdigit() says yes, the wire says no
        "\u0663\u0664",  # Arabic-Indic digits
    ],
)
def test_non_numbers_are_refused_as_dids(number: str) -> None:
    with pytest.raises(ValueError, match="telephone number"):
        UK.did_number(number)


@given(
    st.text(alphabet="0123456789", min_size=4, max_size=14),
    st.sampled_from(["+", "00", "0", ""]),
)
def test_a_stored_did_is_what_an_inbound_call_looks_up(digits: str, prefix: str) -> None:
    """`did_number` is `canonical` plus refusals: what is stored is what is looked up."""
    text = prefix + digits
    try:
        stored = UK.did_number(text)
    except ValueError:
        return
    assert UK.canonical(text) == stored


@pytest.mark.parametrize(
    ("prefix", "number", "matches"),
    [
        ("0900", "0900 123456", True),
        ("0900", "+44 900 123456", True),  # the same number written internationally
        ("0900", "0044900123456", True),
        ("+44900", "0900123456", True),
        ("0900", "0901123456", False),
        ("+", "+33123456789", True),  # "+" alone: every international number
        ("00", "0033123456789", True),
        ("+", "01632960001", False),
        ("0", "01632960001", True),  # the national prefix alone: every national number
        ("0", "+33123456789", False),
        ("112", "112", True),
        ("abc", "112", False),
    ],
)
def test_prefix_matching(prefix: str, number: str, matches: bool) -> None:
    parsed = UK.parse(number)
    assert parsed is not None
    assert UK.prefix_matches(parsed, prefix) is matches
