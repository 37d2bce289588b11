"""Turning generated token ids into the text `llmctl generate` prints: continuation text, stop strings, streaming.

* `continuation(tokenizer, context, new)` — the text the new ids add after the context ids, decoded together so
  the tokenizer's joining rules apply at the seam (word tokenizers insert the space before the first new word).
* `cut_at_stop(text, stops)` — text up to the earliest occurrence of any stop string (the stop string itself is
  not part of the output).
* `StreamPrinter` — prints the continuation while tokens arrive, holding back what may still change: a stop string
  being formed (its length - 1 characters), an incomplete UTF-8 character at the end of byte-level BPE output, and
  for word tokenizers the last word (the space before it depends on the next token). What it prints is always a
  prefix of the final text, and `finish` prints the rest.
"""

from __future__ import annotations

from typing import Callable, Sequence

REPLACEMENT = "\ufffd"


def continuation(tokenizer, context: Sequence[int], new: Sequence[int]) -> str:
    """Text of `new` as it reads after `context` (specials dropped)."""
    new = [int(t) for t in new]
    if not new:
        return ""
    if tokenizer.kind != "word" or not context:
        return tokenizer.decode(new)
    head = tokenizer.decode(list(context))
    full = tokenizer.decode([*context, *new])
    return full[len(head):] if full.startswith(head) else tokenizer.decode(new)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """(text before the earliest stop string, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class StreamPrinter:
    """Incremental printer of one prompt's continuation (see the module docstring)."""

    def __init__(self, tokenizer, context: Sequence[int], stops: Sequence[str], write: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.context = list(context)
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.write = write
        self.ids: list[int] = []
        self.printed = ""
        self.stopped = False

    def _stable(self, text: str) -> str:
        """The part of `text` no later token can change."""
        kind = self.tokenizer.kind
        if kind == "bpe":
            return text.rstrip(REPLACEMENT)
        if kind == "word" and self.ids:
            visible = [t for t in self.ids if t >= 5]
            if visible:
                last = self.tokenizer.id_to_token(visible[-1])
                head = text[:len(text) - len(last)] if text.endswith(last) else ""
                return head[:-1] if head.endswith(" ") else head
        return text

    def feed(self, new_ids: Sequence[int]) -> bool:
        """Add newly generated ids (EOS/padding excluded); print what is stable. False once a stop string appeared."""
        if self.stopped:
            return False
        self.ids.extend(int(t) for t in new_ids)
        text = continuation(self.tokenizer, self.context, self.ids)
        text, found = cut_at_stop(text, self.stops)
        if found:
            self.stopped = True
            self._emit(text)
            return False
        stable = self._stable(text)
        if self.hold:
            stable = stable[:max(len(self.printed), len(stable) - self.hold)]
        self._emit(stable)
        return True

    def _emit(self, text: str) -> None:
        if len(text) > len(self.printed) and text.startswith(self.printed):
            self.write(text[len(self.printed):])
            self.printed = text

    def finish(self, final_text: str) -> None:
        """Print the remainder of the final text (which the printed part is a prefix of)."""
        self._emit(final_text)
