"""Continuation text, stop strings and the streaming printer for every tokenizer kind."""

from __future__ import annotations

import pytest

from llmctl.data.tokenizers import train_tokenizer
from llmctl.generate.text_output import StreamPrinter, continuation, cut_at_stop

TEXT = "Well-known café: don't stop — naïve \"quotes\" here. 世界 ok? Yes! Done, (really) now."


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_streamed_prefixes_always_extend_to_the_final_text(kind):
    tokenizer = train_tokenizer(kind, [TEXT * 2], vocab_size=300 if kind == "bpe" else None)
    context = tokenizer.encode("Say:")
    new = tokenizer.encode(" " + TEXT) if kind != "word" else tokenizer.encode(TEXT)
    final = continuation(tokenizer, context, new)
    writes = []
    printer = StreamPrinter(tokenizer, context, [], writes.append)
    for token in new:  # one token at a time: the hardest case
        printer.feed([token])
        assert final.startswith("".join(writes))
    printer.finish(final)
    assert "".join(writes) == final
    if kind == "word":
        assert final.startswith(" ")  # the seam with the prompt gets its space


def test_stop_strings_never_printed_and_cut_at_the_earliest():
    assert cut_at_stop("abc STOP def END", ["END", "STOP"]) == ("abc ", True)
    assert cut_at_stop("abc", ["x", ""]) == ("abc", False)
    tokenizer = train_tokenizer("char", [TEXT])
    ids = tokenizer.encode("hello world. stop here")
    writes = []
    printer = StreamPrinter(tokenizer, [], [". st"], writes.append)
    going = [printer.feed([t]) for t in ids]
    assert going.index(False) == len("hello world. st") - 1
    assert "".join(writes) == "hello world"
