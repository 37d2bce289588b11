"""Word-level counting and encoding of large texts with numpy (and the native word store where it is built):
`split_words`' rules, vectorised, with results exactly those of `Counter(split_words(t))` / `WordTokenizer.encode(t)`.

* `scan` — token bounds and hashes of a text (the numpy path), the units texts are grouped into, and `native`, the
  C word store (`llmctl/data/_wordscan.c`) or None where it is not built;
* `counter` — `WordCounter` (counts, and the slots of preprocess's single word pass), `merge_exports`, `count_words`;
* `encoder` — `WordEncoder` (texts → ids with a word tokenizer's vocabulary).
"""
