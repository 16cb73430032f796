"""In Chromium (issue 19): on the console's BAL page, each label of the summary stays with its
value, at a phone's width and a desktop's: the value beside its label or right under it."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page

from mailboxes.models import Mailbox
from tests.browser import sign_in
from tests.personas import make_cast

pytestmark = pytest.mark.django_db(transaction=True)

PAIRS = """() => [...document.querySelectorAll('dl.facts dt')].map(dt => {
  const dd = dt.nextElementSibling;
  const a = dt.getBoundingClientRect(), b = dd.getBoundingClientRect();
  return {label: dt.textContent.trim(), tag: dd.tagName,
          dt: [a.left, a.top, a.right, a.bottom], dd: [b.left, b.top, b.right, b.bottom]};
})"""


@pytest.mark.parametrize("width", [390, 1280])
def test_bal_summary_labels_stay_with_their_values(
    dovecot: Any, live_server: Any, page: Page, width: int
) -> None:
    cast = make_cast()
    box = Mailbox.objects.filter(structure=cast.structure, kind=Mailbox.Kind.PER).first()
    assert box is not None
    # Every pair shown: kind, holder, creation, change of state.
    Mailbox.objects.filter(pk=box.pk).update(status_changed_at=timezone.now())
    page.set_viewport_size({"width": width, "height": 900})
    sign_in(page, live_server.url, cast.director)
    page.goto(f"{live_server.url}/console/{cast.structure.public_id}/bal/{box.public_id}/")
    pairs = page.evaluate(PAIRS)
    labels = [p["label"] for p in pairs]
    assert labels == ["Type", "Titulaire", "Créée le", "État depuis le"]
    for pair in pairs:
        assert pair["tag"] == "DD"
        (tl, tt, tr, tb), (dl, dt_, dr, _db) = pair["dt"], pair["dd"]
        beside = dl >= tr - 1 and abs(dt_ - tt) < 12  # same line, to the right of its label
        under = abs(dl - tl) < 2 and 0 <= dt_ - tb < 12  # right under its label
        assert beside or under, (width, pair)
        assert dr <= width  # nothing cut off at the page's edge
