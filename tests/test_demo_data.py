"""The embedded demo data comes from the standard library and is deterministic."""

from llmctl.demo_data import topic_label, write_demo_data


def test_demo_data_is_built_from_pydoc_topics(tmp_path):
    paths = write_demo_data(tmp_path)
    corpus = paths["corpus"].read_text(encoding="utf-8")
    assert len(corpus) > 300_000 and 'The "if" statement' in corpus
    train = paths["train"].read_text(encoding="utf-8").splitlines()
    valid = paths["valid"].read_text(encoding="utf-8").splitlines()
    assert train[0] == valid[0] == "text\tlabel"
    labels = {line.rsplit("\t", 1)[1] for line in train[1:] + valid[1:]}
    assert labels == {"statement", "expression", "datamodel"}
    assert len(valid) > 200 and len(train) > 4 * len(valid) * 0.8
    assert not set(train[1:]) & set(valid[1:])
    again = write_demo_data(tmp_path / "again")
    assert again["train"].read_bytes() == paths["train"].read_bytes()


def test_topic_labels():
    assert topic_label("if") == "statement"
    assert topic_label("lambda") == "expression"
    assert topic_label("specialnames") == "datamodel"
