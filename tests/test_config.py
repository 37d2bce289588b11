"""Config loading: extends, --set, path resolution, and many bad configs reported precisely (table-driven)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from llmctl import config
from llmctl.errors import ConfigError
from llmctl.schema import Experiment


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_defaults_are_valid(tmp_path):
    exp = config.load(write(tmp_path / "empty.yaml", ""), cwd=tmp_path)
    assert isinstance(exp, Experiment)
    assert exp.run.dir == tmp_path / "runs"  # default paths resolve against the current directory


def test_extends_deep_merge_and_relative_paths(tmp_path):
    write(tmp_path / "base" / "base.yaml", """
        run: {name: base, seed: 7}
        data: {train: [corpus.txt], dir: processed}
        model: {layers: 3, units: 64}
    """)
    child = write(tmp_path / "exp" / "child.yaml", """
        extends: ../base/base.yaml
        run: {name: child}
        model: {units: 128}
    """)
    exp = config.load(child)
    assert exp.run.name == "child" and exp.run.seed == 7
    assert exp.model.layers == 3 and exp.model.units == 128
    # paths from the base file resolve against the base file's folder
    assert exp.data.train[0].path == tmp_path / "base" / "corpus.txt"
    assert exp.data.dir == tmp_path / "base" / "processed"


def test_extends_list_and_cycle(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\nrun: {name: a}\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        config.load(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "model: {layers: 4}\n")
    write(tmp_path / "d.yaml", "model: {units: 32}\n")
    write(tmp_path / "e.yaml", "extends: [c.yaml, d.yaml]\n")
    exp = config.load(tmp_path / "e.yaml")
    assert (exp.model.layers, exp.model.units) == (4, 32)


def test_set_overrides_parse_yaml_values(tmp_path):
    cfg = write(tmp_path / "x.yaml", "train: {epochs: 1}\n")
    exp = config.load(cfg, ["train.epochs=3", "train.lr=1e-2", 'generate.stop=["\\n\\n", END]',
                            "train.clip_norm=null", "data.train=[a.txt, b.txt]", "tokenizer.from=prev"],
                      cwd=tmp_path / "cwd")
    assert exp.train.epochs == 3 and exp.train.lr == pytest.approx(0.01)
    assert exp.generate.stop == ["\n\n", "END"]
    assert exp.train.clip_norm is None
    assert [s.path for s in exp.data.train] == [tmp_path / "cwd" / "a.txt", tmp_path / "cwd" / "b.txt"]
    assert exp.tokenizer.from_ == tmp_path / "cwd" / "prev"


def test_sources_accept_strings_and_mappings(tmp_path):
    cfg = write(tmp_path / "x.yaml", """
        data:
          task: classify
          train: [{path: train.tsv, text: sentence, label: label}]
          valid: [dev.tsv]
    """)
    exp = config.load(cfg)
    assert exp.data.train[0].text == "sentence"
    assert exp.data.valid[0].path == tmp_path / "dev.tsv"


BAD = [
    ("trian: {epochs: 2}\n", ["unknown key `trian`", "did you mean `train`?"]),
    ("train: {bptx: 3}\n", ["unknown key `train.bptx`", "did you mean `train.bptt`?"]),
    ("model: {unit: 3}\n", ["`model.units`"]),
    ("train: {lr: -1}\n", ["`train.lr`", "greater than 0", "-1"]),
    ("train: {epochs: two}\n", ["`train.epochs`", "'two'"]),
    ("train: {optimizer: adagrad}\n", ["`train.optimizer`", "'sgd'", "'adagrad'"]),
    ("generate: {temperature: 0}\n", ["`generate.temperature`", "greater than 0"]),
    ("generate: {top_p: 1.5}\n", ["`generate.top_p`", "less than or equal to 1"]),
    ("generate: {top_k: 0}\n", ["`generate.top_k`", "greater than or equal to 1"]),
    ("data: {split: {valid: 0.6, test: 0.5}}\n", ["`data.split`", "must be < 1"]),
    ("model: {strict_cudnn: true, recurrent_dropout: 0.1}\n", ["recurrent_dropout=0.1", "cuDNN"]),
    ("data: {train: [{path: a.txt, colum: x}]}\n", ["unknown key `data.train[0].colum`"]),
    ("train: {schedule: {kind: plateau}}\ndata: {split: {valid: 0}}\n", ["plateau needs a validation split"]),
    ("run: {name: 'a b/c'}\n", ["`run.name`", "pattern"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
    ("train: [1, 2\n", ["line"]),
    ("train: !!python/object/apply:os.system ['echo pwned']\n", ["unsupported YAML tag", "never executed"]),
    ("extends: missing.yaml\n", ["extends `missing.yaml`", "does not exist"]),
]


@pytest.mark.parametrize("text,fragments", BAD, ids=[b[1][0][:30] for b in BAD])
def test_bad_configs_give_precise_one_line_errors(tmp_path, text, fragments):
    cfg = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    line = info.value.one_line()
    assert "\n" not in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_all_problems_reported_at_once(tmp_path):
    cfg = write(tmp_path / "bad.yaml", "trian: {}\ntrain: {lr: 0, epochs: 0}\nmodel: {units: -1}\n")
    with pytest.raises(ConfigError) as info:
        config.load(cfg)
    assert len(info.value.problems) == 4


def test_python_tag_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    cfg = write(tmp_path / "evil.yaml", f"run: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        config.load(cfg)
    assert not marker.exists()


def test_bad_override_syntax(tmp_path):
    cfg = write(tmp_path / "x.yaml", "")
    with pytest.raises(ConfigError, match="key=value"):
        config.load(cfg, ["train.epochs"])
    with pytest.raises(ConfigError, match="did you mean `train.epochs`"):
        config.load(cfg, ["train.epoch=3"])


def test_dump_roundtrip(tmp_path):
    cfg = write(tmp_path / "x.yaml", "data: {train: [a.txt]}\ntokenizer: {from: tok}\nmodel: {layers: 1}\n")
    exp = config.load(cfg)
    again = write(tmp_path / "other" / "resolved.yaml", config.dump_yaml(exp))
    assert config.load(again) == exp


def test_run_directory_accepted_as_config(tmp_path):
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    exp = config.load(write(tmp_path / "x.yaml", "model: {layers: 1}\n"))
    (run / "config.yaml").write_text(config.dump_yaml(exp), encoding="utf-8")
    assert config.load(run).model.layers == 1
    # a folder that is not a run, or a run directory that does not exist: artifact errors (exit 4), as the README says
    from llmctl.errors import ArtifactError

    with pytest.raises(ArtifactError, match="without config.yaml"):
        config.load(tmp_path / "runs")
    with pytest.raises(ArtifactError, match="run directory .*r2 does not exist"):
        config.load(tmp_path / "runs" / "r2")


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "latin.yaml"
    bad.write_bytes("run: {name: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(bad)


def test_stopword_file_resolves_against_its_config_but_builtin_names_stay(tmp_path):
    cfg = write(tmp_path / "exp" / "c.yaml", "data: {normalize: {stopwords: lists/stop.txt}}")
    assert config.load(cfg, cwd=tmp_path).data.normalize.stopwords == str(tmp_path / "exp" / "lists" / "stop.txt")
    cfg = write(tmp_path / "exp" / "d.yaml", "data: {normalize: {stopwords: English}}")
    assert config.load(cfg, cwd=tmp_path).data.normalize.stopwords == "English"
