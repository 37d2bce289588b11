"""The `llmctl` command line: the command table. Thin commands, lazy imports; with `cli_errors` (one line and an
exit code per error) and `cli_output` (results on stdout), the only place that prints errors and exits.

`llmctl --help` and `llmctl config ...` never import TensorFlow: each command imports its module when it runs.
Exit codes: 0 ok, 1 unexpected, 2 config, 3 data, 4 artifact, 5 training, 6 resource, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from llmctl import __version__
from llmctl.cli_errors import OneLineUsageErrors, fail, guard
from llmctl.cli_output import print_predictions, print_result, serve_event

app = typer.Typer(
    name="llmctl",
    cls=OneLineUsageErrors,
    help="From raw text to a trained, evaluated and usable LSTM language model — one YAML config per experiment.\n\n"
         "Typical flow: preprocess → pretrain → (finetune) → evaluate → generate → export → serve.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and validate experiment configs (no TensorFlow needed).",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigArg = typer.Argument(..., help="Experiment YAML file (or a run directory: its saved config is used).",
                           show_default=False)
SetOpt = typer.Option(None, "--set", "-s", help="Override a config value: --set train.epochs=3 (repeatable).")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks and TensorFlow's own log lines.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress output (same as --set run.progress=none).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """llmctl command line."""


# ---------------------------------------------------------------- plumbing


def _load(config: Path, overrides: Optional[List[str]], quiet: bool = False, extra: tuple[str, ...] = ()):
    from llmctl import config as config_mod

    sets = list(overrides or []) + list(extra)
    if quiet:
        sets.append("run.progress=none")
    return config_mod.load(config, sets)


def _reporter(exp):
    from llmctl.progress import Reporter

    return Reporter(exp.run.progress)


def _command(module: str, config: Path, overrides, debug: bool, quiet: bool, as_json: bool = False,
             extra: tuple[str, ...] = (), **options: Any) -> None:
    def body():
        exp = _load(config, overrides, quiet, extra)
        mod = importlib.import_module(module)
        if module == "llmctl.generate.generate":
            options["as_json"] = as_json
        with _no_stub_left(exp, module):
            result = mod.run(exp, reporter=_reporter(exp), **options)
        print_result(result, as_json)

    guard(debug, body)


_TRAINERS = ("llmctl.train.pretrain", "llmctl.train.finetune")


@contextlib.contextmanager
def _no_stub_left(exp, module: str):
    """A training command that fails before its first checkpoint removes the run directory it created (and the
    folders it made for it): a refused or failed command adds no files. A diverged run (exit 5) keeps its record
    (summary.json, metrics); a killed one cannot clean up, and its stub is simply restarted by the next plain
    command."""
    if module not in _TRAINERS:
        yield
        return
    from llmctl.runs import RunDir

    root = RunDir.of(exp).root
    made = [p for p in (root, *root.parents) if not p.exists()]
    try:
        yield
    except BaseException as exc:
        from llmctl.errors import TrainingError

        if made and not isinstance(exc, TrainingError) and root.is_dir() and not any(
                root.joinpath("checkpoints").glob("*.index")) and not root.joinpath("model.keras").exists():
            import shutil

            shutil.rmtree(root, ignore_errors=True)
            for folder in made[1:]:  # innermost first; stops at the first folder that holds something
                try:
                    folder.rmdir()
                except OSError:
                    break
        raise


# ---------------------------------------------------------------- pipeline commands


@app.command(epilog="Example: llmctl preprocess configs/shakespeare_char.yaml")
def preprocess(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt, force: bool = typer.Option(
        False, "--force", help="Rebuild even when inputs and settings are unchanged."),
        debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Tokenize corpora into a dataset directory: tokenizer + memory-mapped token files + manifest."""
    _command("llmctl.data.preprocess", config, set_, debug, quiet, force=force)


@app.command(epilog="Example: llmctl pretrain configs/shakespeare_char.yaml --set train.epochs=2")
def pretrain(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt,
             resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
             debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Train a language model from scratch on a preprocessed dataset."""
    extra = (("run.resume=always",) if resume else ()) + (("run.overwrite=true",) if overwrite else ())
    _command("llmctl.train.pretrain", config, set_, debug, quiet, extra=extra)


@app.command(epilog="Example: llmctl finetune configs/sst2_finetune.yaml")
def finetune(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt,
             resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
             debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Adapt a pretrained run (or train from scratch): domain LM, classification, or prompt→response."""
    extra = (("run.resume=always",) if resume else ()) + (("run.overwrite=true",) if overwrite else ())
    _command("llmctl.train.finetune", config, set_, debug, quiet, extra=extra)


@app.command(epilog="Example: llmctl evaluate configs/shakespeare_char.yaml --split test --json")
def evaluate(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt,
             split: Optional[str] = typer.Option(None, "--split", help="Dataset split: train, valid or test."),
             file: Optional[List[Path]] = typer.Option(None, "--file", help="Evaluate a text file instead "
                                                                             "(repeatable)."),
             as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
             debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Measure a trained run: perplexity/bits protocol card, or accuracy/F1 for classifiers."""
    extra: tuple[str, ...] = ()
    if split:
        extra += (f"evaluate.split={split}",)
    if file:
        extra += ("evaluate.files=" + json.dumps([str(f) for f in file]),)
    _command("llmctl.evaluate", config, set_, debug, quiet, as_json=as_json, extra=extra)


@app.command(epilog="Example: llmctl generate runs/shakespeare_char --prompt 'ROMEO:' --set generate.top_p=0.9")
def generate(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt,
             prompt: Optional[List[str]] = typer.Option(None, "--prompt", "-p", help="Prompt text (repeatable)."),
             prompts_file: Optional[Path] = typer.Option(None, "--prompts-file", help="One prompt per line; "
                                                                                         "`-` reads stdin."),
             as_json: bool = typer.Option(False, "--json", help="One JSON object per output line (JSONL)."),
             debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Write text with a trained language model (greedy, top-k, top-p, beam)."""

    def body():
        from llmctl.limits import check_generation

        prompts = _collect_prompts(prompt, prompts_file)
        exp = _load(config, set_, quiet)
        check_generation(exp.generate, prompts or exp.generate.prompts)  # sizes, before the model is loaded
        from llmctl.generate import generate as generate_mod

        print_result(generate_mod.run(exp, reporter=_reporter(exp), prompts=prompts, as_json=as_json), as_json)

    guard(debug, body)


def _collect_prompts(prompt: Optional[List[str]], prompts_file: Optional[Path]) -> Optional[list[str]]:
    from llmctl.limits import check_text_file

    prompts = list(prompt or [])
    if prompts_file is not None:
        check_text_file(prompts_file)
        if str(prompts_file) == "-":
            prompts += [line.rstrip("\n") for line in sys.stdin]
        else:
            try:
                prompts += prompts_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"data error: cannot read prompts file {prompts_file}: {exc}", 3)
    elif not prompts and not sys.stdin.isatty() and not os.environ.get("LLMCTL_NO_STDIN"):
        data = sys.stdin.read()
        prompts += [line for line in data.splitlines()]
    return prompts or None


@app.command(epilog="Example: llmctl export runs/shakespeare_char --set export.quantize=dynamic_int8")
def export(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt,
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export directory."),
           debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Write deployable artifacts: SavedModel (prefill/step/generate signatures) and TFLite."""
    extra = ("export.overwrite=true",) if overwrite else ()
    _command("llmctl.export", config, set_, debug, quiet, extra=extra)


@app.command(epilog="Example: llmctl serve runs/demo --port 8000 --set serve.max_batch=16")
def serve(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt,
          host: Optional[str] = typer.Option(None, "--host", help="Address to bind (default serve.host: "
                                                                   "127.0.0.1, this machine only)."),
          port: Optional[int] = typer.Option(None, "--port", help="TCP port (default serve.port: 8000; 0 = any "
                                                                   "free port)."),
          debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Serve a trained run over HTTP: OpenAI-compatible /v1/completions (or /v1/classify), with dynamic batching."""

    def body():
        extra = ((f"serve.host={json.dumps(host)}",) if host is not None else ()) + (
            (f"serve.port={port}",) if port is not None else ())
        exp = _load(config, set_, quiet, extra)
        from llmctl import serve as serve_mod

        serve_mod.run(exp, reporter=_reporter(exp), on_event=serve_event)

    guard(debug, body)


# ---------------------------------------------------------------- config commands


@config_app.command("validate", epilog="Example: llmctl config validate configs/demo.yaml --set train.lr=0.01")
def config_validate(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt, debug: bool = DebugOpt) -> None:
    """Check a config (extends, overrides, types, ranges, unknown keys) and report every problem at once."""
    guard(debug, lambda: (_load(config, set_), typer.echo(f"ok: {config} is valid")))


@config_app.command("show", epilog="Example: llmctl config show configs/demo.yaml --set train.epochs=2")
def config_show(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt, debug: bool = DebugOpt) -> None:
    """Print the resolved config (extends merged, overrides applied, paths absolute) as YAML."""
    from llmctl import config as config_mod

    guard(debug, lambda: typer.echo(config_mod.dump_yaml(_load(config, set_)), nl=False))


@config_app.command("schema", epilog="Example: llmctl config schema > docs/config.md")
def config_schema() -> None:
    """Print the config reference (every section and field, default and description) as Markdown."""
    from llmctl.schema_docs import schema_markdown

    typer.echo(schema_markdown(), nl=False)


@app.command(epilog="Example: llmctl predict runs/sst2_finetune --text 'a gripping , funny film' --json")
def predict(config: Path = ConfigArg, set_: Optional[List[str]] = SetOpt,
            text: Optional[List[str]] = typer.Option(None, "--text", "-t", help="Text to classify (repeatable)."),
            file: Optional[Path] = typer.Option(None, "--file", "-f", help="One text per line; `-` reads stdin."),
            as_json: bool = typer.Option(False, "--json", help="One JSON object per text (JSONL) on stdout."),
            debug: bool = DebugOpt, quiet: bool = QuietOpt) -> None:
    """Label new texts with a classification run: predicted label and class probabilities per text."""

    def body():
        texts = _collect_texts(text, file)
        exp = _load(config, set_, quiet)
        from llmctl import predict as predict_mod

        result = predict_mod.run(exp, reporter=_reporter(exp), texts=texts, as_json=as_json)
        print_predictions(result, as_json)

    guard(debug, body)


def _collect_texts(text: Optional[List[str]], file: Optional[Path]) -> list[str]:
    from llmctl.errors import DataError
    from llmctl.limits import check_text_file

    texts = list(text or [])
    if file is not None:
        check_text_file(file, "texts file")
        if str(file) == "-":
            lines = sys.stdin.read().splitlines()
        else:
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"cannot read texts file {file}: {exc}", hint="pass a UTF-8 text file, one text "
                                                                               "per line") from None
        texts += [line for line in lines if line.strip()]
    elif not texts and not sys.stdin.isatty() and not os.environ.get("LLMCTL_NO_STDIN"):
        texts += [line for line in sys.stdin.read().splitlines() if line.strip()]
    return texts


def main() -> None:
    app()


if __name__ == "__main__":
    main()
