"""The page's composed queries in a real browser (Debian chromium, a live ``frozenlens serve``):
add and subtract text terms as chips, remove one with its ×, and "Search with this photo"
from a result.

Facts checked against the packaged ``lite`` encoder on the KPhotoAlbum archive: "an animal"
ranks spiff.jpg (the rabbit) first; "an animal" minus "a rabbit" ranks donna_2.jpg (a dog)
first and spiff.jpg lower; "une table de billard" ranks pool.jpg first,
and adding pool.jpg as a photo term keeps it first with a far higher score (0.96 vs 0.70).
"""

from __future__ import annotations

import pytest

from .test_ui_browser import cards, names, open_page, search, set_field, shoot, status, wait_status, wait_thumbs

pytestmark = pytest.mark.slow


def chips(page) -> list[str]:
    return page.locator("#fl-terms .fl-chip").evaluate_all("els => els.map(e => e.innerText.replace(/\\s+/g, ' '))")


def results_after(page, fragment: str) -> list[dict]:
    """The result cards once the status says ``fragment`` and every thumbnail has loaded."""
    wait_status(page, fragment)
    wait_thumbs(page)
    return cards(page)


def add_term(page, text: str, button: str = "fl-term-add") -> None:
    set_field(page, "fl-term", text)
    page.locator(f"#{button}").click()


def test_add_subtract_and_remove_terms(page, server, shots):
    open_page(page, server)
    search(page, "an animal")
    plain = names(cards(page))
    assert plain[0] == "spiff.jpg"
    add_term(page, "a rabbit", "fl-term-subtract")
    composed = names(results_after(page, "for “an animal” − “a rabbit”"))
    shoot(page, shots, "compose_subtract")
    assert chips(page) == ["− “a rabbit” ×1 ×"]
    assert composed[0] == "donna_2.jpg" and composed.index("spiff.jpg") > 0
    assert page.locator("#fl-term textarea, #fl-term input").first.input_value() == ""  # ready for the next term
    # a weighted addition, then remove the subtraction with its ×
    set_field(page, "fl-term-weight", "0.5")
    add_term(page, "snow")
    wait_status(page, "+ ×0.5 “snow”")
    assert len(chips(page)) == 2 and chips(page)[1].startswith("+ “snow” ×0.5")
    page.locator("#fl-terms .fl-chip-x").first.click()
    wait_status(page, "for “an animal” + ×0.5 “snow”.")
    assert chips(page) == ["+ “snow” ×0.5 ×"]
    page.locator("#fl-terms .fl-chip-x").first.click()
    page.wait_for_function("() => document.querySelectorAll('#fl-terms .fl-chip').length === 0")
    wait_status(page, "for “an animal”.")
    assert names(cards(page)) == plain


def test_search_with_this_photo(page, server, shots):
    open_page(page, server)
    assert page.locator("#fl-with-photo").is_disabled()
    search(page, "une table de billard")
    first = cards(page)[0]
    assert names([first]) == ["pool.jpg"]
    page.locator("#fl-results .fl-card").first.click()
    page.wait_for_selector(f"#fl-why .fl-why[data-id='{first['id']}']")
    assert page.locator("#fl-with-photo").is_enabled()
    page.locator("#fl-with-photo").click()
    rows = results_after(page, "+ photo pool.jpg")
    shoot(page, shots, "compose_with_photo")
    assert names(rows)[0] == "pool.jpg" and rows[0]["score"] > first["score"] + 0.1
    assert chips(page) == ["+ photo pool.jpg ×1 ×"]
    assert page.locator("#fl-with-photo").is_disabled()  # the selection went with the old results


def test_bad_terms_are_explained(page, server):
    open_page(page, server)
    search(page, "a dog")
    add_term(page, "   ")
    wait_status(page, "empty query")
    assert page.locator("#fl-status [role=alert], #fl-status .fl-error").count() == 1
    assert chips(page) == []
    set_field(page, "fl-term-weight", "0")
    add_term(page, "snow")
    wait_status(page, "weight must be a positive number")
    assert chips(page) == [] and "Traceback" not in status(page)
    set_field(page, "fl-term-weight", "11")
    add_term(page, "snow")
    wait_status(page, "between -10 and 10")
    assert chips(page) == []
