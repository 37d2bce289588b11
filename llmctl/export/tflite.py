"""TFLite conversion: builtin ops only, named signatures, float32 or dynamic-range int8 weights.

Why this route (measured with TF 2.21 / LiteRT 2.3):
- Keras 3 weights reach the converter as resource variables; converted as such they come out as VAR_HANDLE /
  READ_VARIABLE ops that LiteRT never initialises (NaN outputs or a failing READ_VARIABLE). So the fixed-shape
  function is first frozen (`convert_variables_to_constants_v2`, what `from_keras_model` does internally), wrapped
  back into a `tf.function` that restores the output names, saved as a small variable-free SavedModel and converted
  with `from_saved_model(signature_keys=[name])` — the one entry point that keeps the signature name, so the model
  runs through `Interpreter(...).get_signature_runner(name)`.
- `target_spec.supported_ops = [TFLITE_BUILTINS]`: a model that would need Flex (SELECT_TF_OPS) fails to convert
  instead of producing a file stock interpreters cannot run; `model_ops` re-reads the flatbuffer's operator table
  (every subgraph) to prove it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from llmctl.errors import ArtifactError
from llmctl.tfenv import import_tf

tf = import_tf()

QUANTIZE_SUFFIX = {"none": "float32", "dynamic_int8": "int8"}


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Point file descriptor 2 at a temporary file (the converter and LiteRT log there from C++); the captured text
    is appended to the yielded list when the block ends."""
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def frozen_function(fn: Callable) -> Callable:
    """`fn` (a `tf.function` with an input signature) with its variables folded into constants, same input and
    output names."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = fn.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    outputs = concrete.structured_outputs
    specs = list(concrete.structured_input_signature[0])

    def call(*args):
        return tf.nest.pack_sequence_as(outputs, tf.nest.flatten(frozen(*args)))

    return tf.function(call, input_signature=specs)


def convert(fn: Callable, name: str, *, quantize: str, workdir: Path) -> bytes:
    """Convert the fixed-shape `tf.function` `fn` into a TFLite flatbuffer with one signature called `name`."""
    if quantize not in QUANTIZE_SUFFIX:
        raise ValueError(f"quantize must be one of {sorted(QUANTIZE_SUFFIX)}, got {quantize!r}")
    holder = tf.Module()
    holder.fn = frozen_function(fn)
    source = Path(tempfile.mkdtemp(prefix=f"tflite-{name}-", dir=workdir))
    tf.saved_model.save(holder, str(source), signatures={name: holder.fn.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(source), signature_keys=[name])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.allow_custom_ops = False
    if quantize == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data → dynamic-range int8
    try:
        with native_stderr_captured() as log:
            content = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and plain exceptions alike
        raise ArtifactError(f"TFLite conversion of `{name}` failed: {_conversion_problem(exc, log)}",
                            hint="export only the SavedModel with --set 'export.formats=[saved_model]'") from None
    finally:
        shutil.rmtree(source, ignore_errors=True)
    ops = model_ops(content)
    not_builtin = [op for op in ops if op.startswith("Flex") or op.startswith("CUSTOM")]
    if not_builtin:
        raise ArtifactError(f"TFLite model `{name}` needs non-builtin ops {', '.join(not_builtin)} that stock "
                            "interpreters cannot run",
                            hint="export only the SavedModel with --set 'export.formats=[saved_model]'")
    return content


def _conversion_problem(exc: BaseException, log: list[str]) -> str:
    text = f"{exc} {' '.join(log)}"
    needed = sorted(set(re.findall(r"\btf\.([A-Z][A-Za-z0-9]+)", text)))
    if needed:
        return f"it needs TensorFlow ops outside the TFLite builtins ({', '.join(needed)}; SELECT_TF_OPS / Flex)"
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return first[:200]


def model_ops(content: bytes) -> list[str]:
    """Every operator a TFLite flatbuffer uses, across all subgraphs: builtin names, `Flex...` / `CUSTOM:<name>`."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    names = {value: key for key, value in vars(schema.BuiltinOperator).items() if not key.startswith("_")}
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(builtin, str(builtin))
        if name == "CUSTOM":
            custom = (code.CustomCode() or b"").decode("utf-8", "replace")
            name = custom if custom.startswith("Flex") else f"CUSTOM:{custom}"
        ops.add(name)
    return sorted(ops)


def signature_runner(content_or_path: bytes | str | Path, name: str) -> Any:
    """A LiteRT signature runner for `name` (the interpreter is kept alive by the runner)."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_captured():
        if isinstance(content_or_path, (bytes, bytearray)):
            interpreter = Interpreter(model_content=bytes(content_or_path))
        else:
            interpreter = Interpreter(model_path=str(content_or_path))
        runner = interpreter.get_signature_runner(name)
    return runner


def signature_io(content: bytes) -> dict[str, dict[str, dict[str, Any]]]:
    """{signature: {"inputs": {name: {shape, dtype}}, "outputs": {...}}} of a TFLite model (for the manifest)."""
    from ai_edge_litert.interpreter import Interpreter

    with native_stderr_captured():
        interpreter = Interpreter(model_content=content)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(name)
        out[name] = {
            "inputs": {key: {"shape": [int(d) for d in det["shape"]], "dtype": det["dtype"].__name__}
                       for key, det in sorted(runner.get_input_details().items())},
            "outputs": {key: {"shape": [int(d) for d in det["shape"]], "dtype": det["dtype"].__name__}
                        for key, det in sorted(runner.get_output_details().items())},
        }
    return out
