"""Compiled autoregressive decoding: prefill the prompts once, then O(1) work per new token inside one graph loop.

    decoder = Decoder(model, strategy="sample", top_p=0.9)
    out = decoder.generate([[2, 17, 5], [2, 9]], max_new_tokens=200, seed=1234)
    out.sequences[i][0]   # new token ids of prompt i (EOS not included); out.finish[i][0] says why it ended

* **Prefill** runs the whole prompt batch through the LSTM stack once (`tf.function`, any shape, traced once).
  Prompts of different lengths are **right-aligned** (left-padded) and masked: the Keras LSTM keeps its state
  unchanged on masked steps, so every row starts its prompt from the zero state, exactly as if run alone, and all
  rows' next-token logits sit in the last column. (Bucketing by length would need one decode loop per bucket.)
* **Decode** (`greedy` / `sample`) is ONE `tf.while_loop` (`loop.decode_loop`, shared with the SavedModel
  `generate` signature) in one XLA-compiled `tf.function`: each iteration applies
  the logit processors (repetition penalty over the tokens generated so far, EOS masked until `min_new_tokens`),
  picks the next token in-graph (argmax, or `graph_sampling.GraphSampler`: temperature → top-k → top-p →
  inverse-CDF draw) and advances the LSTM cells by one step with the carried (h, c) state. Rows that produced EOS
  are frozen; the loop ends when every row has finished or `max_new_tokens` is reached. Every row carries its own
  settings (`RowSettings`: greedy or sampled, temperature, top-p, seed and row id, length limit) and its own step,
  so ONE loop serves `generate` (every row alike) and `llmctl serve`'s dynamic batching (`start` / `advance` on a
  `RowBatch` whose rows join and leave between chunks): a row's tokens never depend on its neighbours. For
  streaming, the same compiled loop runs in chunks of `chunk` steps (the carry — logits, states, tokens so far —
  goes in and out), so text can be printed every few tokens at a negligible cost.
* **Beam** search is one `tf.while_loop` too (`beam.beam_search_loop`), compiled as a plain graph: XLA's CPU top-k
  over width × vocab is slower than TensorFlow's kernel.

Randomness: token t of prompt row r is drawn with a uniform number hashed from (seed, r, t) (`row_uniforms`), so the
same seed gives the same text on every rerun, and a prompt's text does not depend on the other prompts in its batch
when the caller passes its global index as the row id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Sequence

import numpy as np

from llmctl.data.specials import EOS_ID, PAD_ID
from llmctl.generate.beam import beam_search_loop
from llmctl.generate.graph_sampling import GraphSampler, top_p_target
from llmctl.generate.logit_processors import apply_repetition_penalty, mask_tokens
from llmctl.generate.loop import Greedy, RowSampling, decode_loop
from llmctl.models.lstm_lm import flatten_states, one_step, unflatten_states
from llmctl.tfenv import import_tf

tf = import_tf()

STRATEGIES = ("greedy", "sample", "beam")


@dataclass
class Generation:
    """What `Decoder.generate` returns. Per prompt i: `sequences[i]` — hypotheses (1, or `n_best` for beam), each a
    list of new token ids without the final EOS; `finish[i]` — `eos`, `length` (max_new_tokens reached) or `stopped`
    (the caller's `on_chunk` asked to stop); `scores[i]` — beam scores (length-normalised log-probabilities)."""

    sequences: list[list[list[int]]]
    finish: list[list[str]]
    scores: list[list[float]] | None = None
    steps: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    prompt_tokens: int = 0
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def new_tokens(self) -> int:
        """Tokens produced by the model (EOS included), over every prompt and hypothesis."""
        return sum(len(seq) + (reason == "eos") for seqs, reasons in zip(self.sequences, self.finish, strict=True)
                   for seq, reason in zip(seqs, reasons, strict=True))


@dataclass(frozen=True)
class RowSettings:
    """How one row is decoded: up to `max_new_tokens`; greedy, or sampled with its own `temperature` and `top_p`
    (the decoder's `top_k`, repetition penalty and min_new_tokens apply to every row); its random stream is
    (`seed`, `row`), as in `Decoder.generate(..., seed=seed, rows=[row])`."""

    max_new_tokens: int
    seed: int = 0
    row: int = 0
    greedy: bool = True
    temperature: float = 1.0
    top_p: float | None = None


def check_rows(prompts: Sequence[Sequence[int]], settings: Sequence[RowSettings], width: int) -> None:
    """What a decoder's `start` refuses: not one settings per prompt, a max_new_tokens outside 1 .. `width`."""
    if len(settings) != len(prompts):
        raise ValueError(f"{len(settings)} row settings for {len(prompts)} prompts")
    if any(not 1 <= s.max_new_tokens <= width for s in settings):
        raise ValueError(f"every row needs 1 <= max_new_tokens <= width={width}")


def _take_rows(value, idx: np.ndarray):
    """Rows `idx` of a numpy array or tensor (each one of a list)."""
    if isinstance(value, list):
        return [_take_rows(v, idx) for v in value]
    return value[idx] if isinstance(value, np.ndarray) else tf.gather(value, idx)


def _concat_rows(a, b):
    """The rows of `a`, then those of `b` (numpy arrays or tensors, or lists of them)."""
    if isinstance(a, list):
        return [_concat_rows(x, y) for x, y in zip(a, b, strict=True)]
    return np.concatenate([a, b]) if isinstance(a, np.ndarray) else tf.concat([a, b], 0)


@dataclass
class RowBatch:
    """Rows decoded together by `Decoder.advance`: the loop's carry (tensors; numpy arrays in `llmctl serve`'s
    TFLite backend) and each row's settings (numpy), all with one entry per row. Rows can leave (`take`) and join
    (`concat`) between `advance` calls."""

    logits: Any         # [rows, V] float32 next-token logits
    states: list        # [h0, c0, ...], each [rows, units] float32
    generated: Any      # [rows, width] int32 new tokens so far, -1 past each row's end
    finished: Any       # [rows] bool (EOS produced or max_new_tokens reached)
    lengths: Any        # [rows] int32 tokens produced so far (EOS included)
    seed: np.ndarray
    rows: np.ndarray
    greedy: np.ndarray
    temperature: np.ndarray
    targets: np.ndarray
    max_len: np.ndarray

    @classmethod
    def of(cls, settings: Sequence[RowSettings], *, logits, states: list, generated, finished,
           lengths) -> "RowBatch":
        """A batch of the loop's carry (`logits` ... `lengths`) whose rows are decoded with `settings`, one each."""
        return cls(
            logits=logits, states=states, generated=generated, finished=finished, lengths=lengths,
            seed=np.asarray([int(s.seed) & 0x7FFFFFFF for s in settings], np.int32),
            rows=np.asarray([s.row for s in settings], np.int32),
            greedy=np.asarray([s.greedy for s in settings], bool),
            temperature=np.asarray([1.0 if s.greedy else s.temperature for s in settings], np.float32),
            targets=np.asarray([top_p_target(None if s.greedy else s.top_p) for s in settings], np.float32),
            max_len=np.asarray([s.max_new_tokens for s in settings], np.int32))

    @property
    def size(self) -> int:
        return int(self.seed.shape[0])

    def take(self, index: Sequence[int]) -> "RowBatch":
        """The rows at `index`, in that order."""
        idx = np.asarray(index, np.int32)
        return RowBatch(**{f.name: _take_rows(getattr(self, f.name), idx) for f in fields(self)})

    @staticmethod
    def concat(first: "RowBatch", second: "RowBatch") -> "RowBatch":
        return RowBatch(**{f.name: _concat_rows(getattr(first, f.name), getattr(second, f.name))
                           for f in fields(first)})


class Decoder:
    """Prefill + compiled decode loop over an `LSTMLanguageModel`, with one decoding configuration.

    `strategy`: greedy | sample | beam. `temperature`, `top_k`, `top_p`: sampling filters. `repetition_penalty`:
    CTRL-style, over the tokens generated so far (not the prompt). `min_new_tokens`: EOS is masked before that many
    new tokens. `beam_width`, `length_penalty`, `n_best`: beam search. `jit_compile`: XLA for the greedy/sample loop.
    Graphs are built lazily and reused across calls (one compilation per batch size × max_new_tokens).
    """

    def __init__(self, model, *, strategy: str = "greedy", temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0, min_new_tokens: int = 0,
                 beam_width: int = 4, length_penalty: float = 1.0, n_best: int = 1, eos_id: int | None = EOS_ID,
                 pad_id: int = PAD_ID, jit_compile: bool = True):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if repetition_penalty <= 0 or not np.isfinite(repetition_penalty):
            raise ValueError(f"repetition_penalty must be a finite number > 0, got {repetition_penalty!r}")
        if min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be >= 0, got {min_new_tokens!r}")
        if strategy == "beam" and not 1 <= n_best <= beam_width:
            raise ValueError(f"n_best must be in [1, beam_width={beam_width}], got {n_best!r}")
        self.model = model
        self.strategy = strategy
        self.sampler = GraphSampler(temperature, top_k, top_p) if strategy == "sample" else None
        self.repetition_penalty = float(repetition_penalty)
        self.min_new_tokens = int(min_new_tokens)
        self.beam_width = int(beam_width)
        self.length_penalty = float(length_penalty)
        self.n_best = int(n_best)
        self.eos_id = None if eos_id is None else int(eos_id)
        self.pad_id = int(pad_id)
        self.jit_compile = bool(jit_compile)
        self._prefill_fn = tf.function(self._prefill_graph, input_signature=[
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.bool)])
        self.top_k = None if top_k is None or strategy != "sample" else int(top_k)
        self._loop_fns: dict[tuple[bool, bool], Callable] = {}
        self._beam_fns: dict[int, Callable] = {}

    @classmethod
    def from_config(cls, model, gen, *, eos_id: int | None = EOS_ID, jit_compile: bool = True) -> "Decoder":
        """A decoder for a `GenerateConfig` section."""
        return cls(model, strategy=gen.strategy, temperature=gen.temperature, top_k=gen.top_k, top_p=gen.top_p,
                   repetition_penalty=gen.repetition_penalty, min_new_tokens=gen.min_new_tokens,
                   beam_width=gen.beam_width, length_penalty=gen.length_penalty, n_best=gen.n_best, eos_id=eos_id,
                   jit_compile=jit_compile)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strategy": self.strategy}
        if self.sampler is not None:
            out.update(temperature=self.sampler.temperature, top_k=self.sampler.top_k, top_p=self.sampler.top_p)
        if self.strategy == "beam":
            out.update(beam_width=self.beam_width, length_penalty=self.length_penalty, n_best=self.n_best)
        if self.repetition_penalty != 1.0:
            out["repetition_penalty"] = self.repetition_penalty
        if self.min_new_tokens:
            out["min_new_tokens"] = self.min_new_tokens
        return out

    # ---------------------------------------------------------------- model pieces

    def step(self, tokens, states):
        """One decoding step: tokens [B] int32 and [(h, c)] per layer → (logits [B, V] float32, new states)
        (`lstm_lm.one_step`: the LSTM cells directly, the same weights and math as `model(tokens, states)`)."""
        logits, flat = one_step(self.model, tokens, flatten_states(states))
        return logits, unflatten_states(flat)

    def _prefill_graph(self, tokens, mask):
        model = self.model
        x = model.embedding(tokens)
        states = []
        zeros = model.initial_state(tf.shape(tokens)[0])
        for lstm, (h0, c0) in zip(model.lstms, zeros, strict=True):
            x, h, c = lstm(x, initial_state=[h0, c0], mask=mask, training=False)
            states.append((h, c))
        logits = model.project(x[:, -1:, :])[:, 0]
        return tf.cast(logits, tf.float32), flatten_states(states)

    def prefill(self, prompts: Sequence[Sequence[int]]):
        """Run the prompts (each ≥ 1 token) once: (next-token logits [B, V], [(h, c)] per layer).

        Prompts are right-aligned and the padding is masked, so each row equals running its prompt alone.
        """
        if not prompts:
            raise ValueError("prefill needs at least one prompt")
        lengths = [len(p) for p in prompts]
        if min(lengths) < 1:
            raise ValueError("every prompt needs at least one token (start empty prompts with <bos>/<eos>)")
        width = max(lengths)
        ids = np.full((len(prompts), width), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(prompts), width), dtype=bool)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = np.asarray(prompt, dtype=np.int64)
            mask[row, width - len(prompt):] = True
        logits, flat = self._prefill_fn(tf.constant(ids), tf.constant(mask))
        return logits, unflatten_states(flat)

    # ---------------------------------------------------------------- greedy / sample loop (per-row settings)

    def _process(self, logits, step, history):
        """Logit processors shared by every strategy: repetition penalty, then EOS masked before min_new_tokens
        (`step`: a scalar, or [batch] — each row's own step)."""
        if self.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, history, self.repetition_penalty)
        if self.min_new_tokens > 0 and self.eos_id is not None:
            logits = mask_tokens(logits, [self.eos_id], active=step < self.min_new_tokens)
        return logits

    def _loop_graph(self, logits, flat_states, generated, finished, lengths, stop, seed, rows, greedy, temperature,
                    targets, max_len, *, sample: bool, nucleus: bool):
        """At most `stop` steps of the decode loop (`loop.decode_loop`); every row at its own step (`lengths`:
        tokens it has so far) with its own seed / row id / greedy flag / temperature / top-p target / length limit.
        Returns the carry."""
        strategy = RowSampling(greedy, temperature, targets, seed, rows, top_k=self.top_k, nucleus=nucleus) \
            if sample else Greedy()
        return decode_loop(lambda token, flat: one_step(self.model, token, flat), strategy, logits, flat_states,
                           generated, finished, lengths, stop, max_len, eos_id=self.eos_id, process=self._process)

    def _loop(self, sample: bool, nucleus: bool, batch: "RowBatch"):
        """The compiled loop for one (sample, nucleus) variant, traced once for any number of rows and width."""
        key = (sample, nucleus)
        if key not in self._loop_fns:
            def graph(*args):
                return self._loop_graph(*args, sample=sample, nucleus=nucleus)

            def spec(t, dtype):
                return tf.TensorSpec([None, *t.shape[1:]], dtype)

            row = tf.TensorSpec([None], tf.int32)
            signature = [spec(batch.logits, tf.float32), [spec(t, tf.float32) for t in batch.states],
                         tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.bool), row,
                         tf.TensorSpec([], tf.int32), row, row, tf.TensorSpec([None], tf.bool),
                         tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32), row]
            self._loop_fns[key] = tf.function(graph, jit_compile=self.jit_compile, input_signature=signature)
        return self._loop_fns[key]

    def row_settings(self, *, seed: int = 0, row: int = 0, max_new_tokens: int = 1) -> RowSettings:
        """The settings of one row decoded with this decoder's own strategy (what `generate` uses)."""
        if self.sampler is None:
            return RowSettings(max_new_tokens, seed=seed, row=row, greedy=True)
        return RowSettings(max_new_tokens, seed=seed, row=row, greedy=False, temperature=self.sampler.temperature,
                           top_p=self.sampler.top_p)

    def start(self, prompts: Sequence[Sequence[int]], settings: Sequence[RowSettings], width: int) -> RowBatch:
        """Prefill `prompts` into a `RowBatch` ready for `advance`; `width`: room for new tokens per row (>= every
        row's max_new_tokens; batches joined with `RowBatch.concat` need the same width)."""
        check_rows(prompts, settings, width)
        logits, states = self.prefill(prompts)
        return self._started(logits, states, settings, width)

    def _started(self, logits, states, settings: Sequence[RowSettings], width: int) -> RowBatch:
        batch = len(settings)
        return RowBatch.of(settings, logits=logits, states=flatten_states(states),
                           generated=tf.fill([batch, int(width)], -1), finished=tf.zeros([batch], tf.bool),
                           lengths=tf.zeros([batch], tf.int32))

    def advance(self, batch: RowBatch, steps: int, *, pad_to: int | None = None,
                full: bool = False) -> tuple[RowBatch, int]:
        """Run up to `steps` steps of the compiled loop on every row (fewer if all rows finish): (new batch, steps
        run). Finished rows stay in the batch, frozen, until the caller drops them (`RowBatch.take`).

        `pad_to`: run the loop on this many rows (finished copies of row 0 fill the rest), so that an XLA loop
        compiles once per padded size instead of once per row count. `full`: run the loop variant that samples
        with the top-p filter whatever the rows need (ONE compiled loop for every mix of rows: greedy rows take
        the argmax, rows without top-p are unfiltered — the same tokens, some work wasted); otherwise the
        cheapest variant the rows need (greedy only / sampling without top-p / sampling with top-p)."""
        size = batch.size
        if pad_to is not None and pad_to > size:
            filler = batch.take([0] * (pad_to - size))
            filler = replace(filler, finished=tf.ones([pad_to - size], tf.bool))
            batch = RowBatch.concat(batch, filler)
        sample = full or not bool(batch.greedy.all())
        nucleus = full or (sample and bool((batch.targets <= 1.0).any()))
        loop = self._loop(sample, nucleus, batch)
        ran, logits, flat, generated, finished, lengths = loop(
            batch.logits, batch.states, batch.generated, batch.finished, batch.lengths, tf.constant(int(steps)),
            tf.constant(batch.seed), tf.constant(batch.rows), tf.constant(batch.greedy),
            tf.constant(batch.temperature), tf.constant(batch.targets), tf.constant(batch.max_len))
        out = replace(batch, logits=logits, states=list(flat), generated=generated, finished=finished,
                      lengths=lengths)
        return (out.take(range(size)) if out.size > size else out), int(ran)

    # ---------------------------------------------------------------- beam

    def _beam_graph(self, logits, flat_states, max_new_tokens: int):
        return beam_search_loop(lambda tokens, states: self.step(tokens, states), unflatten_states(flat_states),
                                logits, beam_width=self.beam_width, max_new_tokens=max_new_tokens,
                                eos_id=self.eos_id, length_penalty=self.length_penalty, n_best=self.n_best,
                                pad_id=self.pad_id, processor=self._process)

    def _beam(self, max_new_tokens: int):
        if max_new_tokens not in self._beam_fns:
            self._beam_fns[max_new_tokens] = tf.function(
                lambda logits, flat: self._beam_graph(logits, flat, max_new_tokens), reduce_retracing=True)
        return self._beam_fns[max_new_tokens]

    # ---------------------------------------------------------------- public entry point

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, seed: int = 0,
                 rows: Sequence[int] | None = None, chunk: int | None = None,
                 on_chunk: Callable[[np.ndarray, np.ndarray], bool | None] | None = None) -> Generation:
        """Generate up to `max_new_tokens` after each prompt.

        `rows`: the row id of each prompt in the random stream (default 0..B-1; pass global prompt indices to make a
        prompt's sampled text independent of how prompts are batched). `chunk` + `on_chunk` (greedy/sample):
        run the loop `chunk` steps at a time and call `on_chunk(new_tokens [B, n] int32 (-1 = row finished),
        finished [B] bool)` after each chunk; returning False stops generation (finish reason `stopped`).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        t0 = time.perf_counter()
        logits, states = self.prefill(prompts)
        prompt_tokens = sum(len(p) for p in prompts)
        t1 = time.perf_counter()
        if self.strategy == "beam":
            out = self._beam(int(max_new_tokens))(logits, flatten_states(states))
            seqs, scores, lens = out.sequences.numpy(), out.scores.numpy(), out.lengths.numpy()
            sequences, finish, all_scores = [], [], []
            for b in range(len(prompts)):
                hyps, reasons, vals = [], [], []
                for j in range(self.n_best):
                    if not np.isfinite(scores[b, j]):
                        continue
                    ids = seqs[b, j, :lens[b, j]].tolist()
                    ended = self.eos_id is not None and bool(ids) and ids[-1] == self.eos_id
                    hyps.append(ids[:-1] if ended else ids)
                    reasons.append("eos" if ended else "length")
                    vals.append(float(scores[b, j]))
                sequences.append(hyps)
                finish.append(reasons)
                all_scores.append(vals)
            return Generation(sequences, finish, all_scores, steps=int(out.steps), prefill_s=t1 - t0,
                              decode_s=time.perf_counter() - t1, prompt_tokens=prompt_tokens)

        n = int(max_new_tokens)
        row_ids = list(range(len(prompts))) if rows is None else [int(r) for r in rows]
        if len(row_ids) != len(prompts):
            raise ValueError(f"rows has {len(row_ids)} entries for {len(prompts)} prompts")
        settings = [self.row_settings(seed=seed, row=r, max_new_tokens=n) for r in row_ids]
        rows_batch = self._started(logits, states, settings, n)
        step_size = n if chunk is None else max(1, int(chunk))
        stopped = False
        done = 0
        while done < n:
            rows_batch, ran = self.advance(rows_batch, min(step_size, n - done))
            all_finished = bool(tf.reduce_all(rows_batch.finished))
            if on_chunk is not None and ran > 0:
                keep_going = on_chunk(rows_batch.generated[:, done:done + ran].numpy(), rows_batch.finished.numpy())
                if keep_going is False:
                    stopped = True
                    done += ran
                    break
            done += ran
            if all_finished:
                break
        generated = rows_batch.generated.numpy()
        finished = rows_batch.finished.numpy()
        lengths = rows_batch.lengths.numpy()
        sequences, finish = [], []
        for b in range(len(prompts)):
            ids = generated[b, :lengths[b]].tolist()
            ended = bool(finished[b]) and self.eos_id is not None and bool(ids) and ids[-1] == self.eos_id
            sequences.append([ids[:-1] if ended else ids])
            finish.append(["eos" if ended else ("stopped" if stopped else "length")])
        return Generation(sequences, finish, None, steps=done, prefill_s=t1 - t0, decode_s=time.perf_counter() - t1,
                          prompt_tokens=prompt_tokens)
