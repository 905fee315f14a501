"""The gallery (index.html) of a dataset run, opened from the file system in a real headless
browser (Debian's chromium): every image renders, the class filter, the sort and the viewer
work when used as a person would (clicks and selections)."""

from __future__ import annotations

import pytest
from browser import CHROMIUM, Browser

from pytorch_grad_cam.cli import main
from pytorch_grad_cam.cli.gallery import gallery_html

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
SETTLE = "new Promise(resolve => setTimeout(resolve, 200))"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    status = main(["--demo", "--num-images", "6", "--output-dir", str(out), "--no-progress"])
    assert status == 0
    browser = Browser(tmp_path_factory.mktemp("profile"))
    browser.open((out / "index.html").as_uri())
    yield browser
    browser.close()


def test_every_image_renders(page):
    page.evaluate("Promise.all([...document.images].map(i => i.decode().catch(() => 0)))")
    thumbs = page.evaluate(
        "[...document.querySelectorAll('.card img')].map(i => [i.naturalWidth, i.complete])"
    )
    assert len(thumbs) == 12  # 6 images x 2 classes
    assert all(width == 160 and complete for width, complete in thumbs)
    assert page.evaluate("document.getElementById('shown').textContent") == "12 of 12 shown"
    assert page.evaluate("document.getElementById('viewer').hidden")


def test_the_class_filter_and_sort(page):
    shown = page.evaluate(
        "const s = document.getElementById('class'); s.value = 'square';"
        f"s.dispatchEvent(new Event('change')); {SETTLE}.then(() =>"
        " [...document.querySelectorAll('.card')].filter(c => !c.hidden)"
        ".map(c => c.dataset.category))"
    )
    assert shown == ["square"] * 6
    assert page.evaluate("document.getElementById('shown').textContent") == "6 of 12 shown"
    order = page.evaluate(
        "const t = document.getElementById('sort'); t.value = 'asc';"
        f"t.dispatchEvent(new Event('change')); {SETTLE}.then(() =>"
        " [...document.querySelectorAll('.card')].filter(c => !c.hidden)"
        ".map(c => Number(c.querySelector('figcaption').textContent.match(/\\((.*)\\)/)[1])))"
    )
    assert order == sorted(order) and len(order) == 6
    page.evaluate(
        "const u = document.getElementById('class'); u.value = '';"
        f"u.dispatchEvent(new Event('change')); {SETTLE}"
    )
    assert page.evaluate("document.getElementById('shown').textContent") == "12 of 12 shown"


def test_clicking_a_card_opens_its_full_overlay_and_a_click_closes_it(page):
    opened = page.evaluate(
        "const card = document.querySelectorAll('.card')[2]; card.click();"
        f"{SETTLE}.then(() => document.getElementById('full').decode()).then(() => ["
        " document.getElementById('viewer').hidden,"
        " document.getElementById('full').getAttribute('src'),"
        " document.getElementById('full').naturalWidth,"
        " card.querySelector('img').getAttribute('src')])"
    )
    hidden, src, width, thumb = opened
    assert not hidden and src.startswith("overlays/") and width == 64
    assert thumb == src.replace("overlays/", "thumbs/")
    closed = page.evaluate(
        f"document.getElementById('viewer').click(); {SETTLE}.then(() =>"
        " document.getElementById('viewer').hidden)"
    )
    assert closed


def test_the_page_is_self_contained():
    records = [
        {
            "image": "</script><b>x.png", "status": "ok", "category": 1, "category_name": None,
            "score": 1.0, "probability": 0.5, "thumbnail": "t.jpg", "overlay": "o.jpg",
        }
    ]  # fmt: skip
    html = gallery_html("a <title>", records)
    assert "http://" not in html and "https://" not in html and "<link" not in html
    assert html.count("</script>") == 2  # the data cannot close its script element
    assert "a &lt;title&gt;" in html
