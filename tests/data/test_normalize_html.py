"""data.normalize.html: raw HTML reviews (IMDb) become plain text with line breaks."""

from llmctl.data.normalize import Normalizer
from llmctl.schema import NormalizeConfig


def test_html_breaks_tags_and_entities():
    norm = Normalizer(NormalizeConfig(html=True))
    assert norm("Great.<br /><br />I <i>loved</i> it &amp; more<BR>end") == "Great.\n\nI loved it & more\nend"


def test_html_keeps_text_that_only_looks_like_markup():
    norm = Normalizer(NormalizeConfig(html=True))
    assert norm("I give it <3 stars, 5 > 4") == "I give it <3 stars, 5 > 4"


def test_html_off_by_default_and_fingerprint_stable():
    plain = Normalizer(NormalizeConfig())
    assert plain("a<br />b") == "a<br />b"
    assert "html" not in plain.settings()
    assert Normalizer(NormalizeConfig(html=True)).settings()["html"] is True
