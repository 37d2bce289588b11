"""Build script for llmctl's one optional C extension (all package metadata lives in pyproject.toml).

`llmctl.data._wordscan` speeds up word-level preprocessing (see llmctl/data/_wordscan.c). It is optional: without
a C compiler the build skips it and `llmctl.data.fast_words` runs its numpy path, with identical results.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("llmctl.data._wordscan", ["llmctl/data/_wordscan.c"], optional=True,
                             extra_compile_args=["-O3"])])
