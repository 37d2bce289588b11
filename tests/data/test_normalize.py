"""Text normalisation: each option alone, their order, stop-word lists, and piece-wise equivalence."""

from __future__ import annotations

import pytest

from llmctl.data.normalize import ENGLISH_STOPWORDS, Normalizer
from llmctl.errors import ConfigError, DataError
from llmctl.schema import NormalizeConfig


def _norm(**kw) -> Normalizer:
    return Normalizer(NormalizeConfig(**kw))


def test_default_is_identity():
    norm = _norm()
    assert norm.identity
    text = "  Ｆｕｌｌ　width\tＴＥＸＴ ﬁ \n\n"
    assert norm(text) == text
    assert norm.settings() == {"nfkc": False, "lowercase": False, "collapse_whitespace": False, "stopwords": None}


def test_nfkc():
    assert _norm(nfkc=True)("ﬁne Ｆｕｌｌ① e\u0301") == "fine Full1 é"


def test_lowercase():
    assert _norm(lowercase=True)("HeLLo ÉCOLE ΣΟΦΙΑΣ") == "hello école σοφιας"


def test_collapse_whitespace_keeps_newlines():
    norm = _norm(collapse_whitespace=True)
    assert norm("  a \t  b  \n   c\u00a0\u2003d  \n\n e ") == "a b\nc d\n\ne"


def test_order_nfkc_then_lowercase():
    # NFKC turns the fullwidth letters into ASCII, which lowercase then handles
    assert _norm(nfkc=True, lowercase=True)("ＡＢＣ") == "abc"


def test_english_stopwords_keep_negations():
    norm = _norm(stopwords="english")
    assert norm("The movie is not good , and it was NOT fun .") == "movie not good , NOT fun ."
    assert {"no", "not", "nor"}.isdisjoint(ENGLISH_STOPWORDS)
    assert norm("the the\nof a") == "\n"  # lines emptied by stop words stay as bare newlines
    assert norm.settings()["stopwords"] == {"list": "english"}


def test_stopwords_tidy_spaces_per_line():
    norm = _norm(stopwords="english")
    assert norm("it is the end\nof the story") == "end\nstory"


def test_user_stopword_file(tmp_path):
    path = tmp_path / "stop.txt"
    path.write_text("# my list\nFilm\n\nmovie\n", encoding="utf-8")
    norm = _norm(stopwords=str(path))
    assert norm("A film about a Movie") == "A about a"
    info = norm.settings()["stopwords"]
    assert info["words"] == 2 and len(info["sha256"]) == 64


def test_stopword_errors(tmp_path):
    with pytest.raises(ConfigError, match="neither a built-in list nor an existing file"):
        _norm(stopwords=str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no words"):
        _norm(stopwords=str(empty))


@pytest.mark.parametrize("options", [dict(nfkc=True), dict(lowercase=True), dict(collapse_whitespace=True),
                                     dict(nfkc=True, lowercase=True, collapse_whitespace=True)])
def test_piecewise_equals_whole(options):
    """Pieces cut before a newline with text on both sides normalise exactly like the whole text."""
    norm = _norm(**options)
    text = "Ｆirst  line ﬁ  \n\tSecond\u00a0LINE  \nthird   one  \n  fourth ΟΔΟΣ\nΣ last"
    cut = text.index("\nΣ")
    assert norm(text[:cut]) + norm(text[cut:]) == norm(text)
