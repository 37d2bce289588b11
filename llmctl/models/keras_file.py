"""Loading a `model.keras` file: Keras safe mode, and one whole-sentence `ArtifactError` for a damaged or unsafe
file (a truncated zip is named as such, not "File not found"; Keras' Lambda refusal is kept whole)."""

from __future__ import annotations

from llmctl.errors import ArtifactError


def first_sentences(text: str, limit: int = 400) -> str:
    """The first line of an exception message, whole sentences up to `limit` characters (never cut mid-word)."""
    line = " ".join(str(text).split("\n")[0].split()) if text else ""
    if len(line) <= limit:
        return line
    cut = line.rfind(". ", 0, limit)
    return line[:cut + 1] if cut > 0 else line[:line.rfind(" ", 0, limit)] + " ..."


def load_keras_file(path):
    """`keras.saving.load_model(path)` in safe mode; a damaged or unsafe file is one whole-sentence `ArtifactError`."""
    import zipfile

    import keras

    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path} is damaged (not a complete .keras zip archive; truncated?)",
                            hint="restore it from a copy or train the run again") from None
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds of errors for a bad file
        raise ArtifactError(f"cannot load {path}: {first_sentences(str(exc))}",
                            hint="use a model.keras written by llmctl, or train the run again") from None
