"""Stream and windows batching over memmaps: layout, shift, nothing dropped, exact skipping."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.data.batching import (
    StreamLayout,
    StreamSteps,
    WindowSteps,
    check_stream_fits,
    step_arrays,
    step_dataset,
)
from llmctl.errors import ConfigError, DataError


def _targets_seen(source, epoch):
    """{target position: count} over one epoch, checking each input is the token just before its target."""
    tokens = source.tokens
    seen: dict[int, int] = {}
    for step in range(source.steps(epoch)):
        for x, y, w in source.step(epoch, step):
            for row in range(x.shape[0]):
                for t in range(x.shape[1]):
                    if w[row, t] == 0:
                        continue
                    pos = int(y[row, t]) - int(tokens[0])  # tokens are consecutive integers here
                    assert tokens[pos] == y[row, t]
                    assert x[row, t] == tokens[pos - 1]
                    seen[pos] = seen.get(pos, 0) + 1
    return seen


def test_stream_equals_hand_computed_batchify():
    n, b, bptt = 41, 4, 3  # N-1 = 40 divides by B: exactly batchify(tokens[:-1]) / batchify(tokens[1:])
    tokens = np.arange(100, 100 + n, dtype=np.uint16)
    source = StreamSteps(tokens, batch_size=b, bptt=bptt, check=False)
    inputs = tokens[:-1].reshape(b, -1)  # batchify: column c = tokens[c*L:(c+1)*L] (rows here)
    targets = tokens[1:].reshape(b, -1)
    xs, ys, ws = zip(*(source.step(0, i)[0] for i in range(source.steps(0))), strict=True)
    x, y, w = np.concatenate(xs, 1), np.concatenate(ys, 1), np.concatenate(ws, 1)
    length = inputs.shape[1]  # 10 steps: windows of 3, 3, 3 and a last partial window of 1 (kept)
    assert source.steps(0) == 4
    np.testing.assert_array_equal(x[:, :length], inputs)
    np.testing.assert_array_equal(y[:, :length], targets)
    np.testing.assert_array_equal(y[:, :length - 1], x[:, 1:length])  # targets are inputs shifted by one
    assert w[:, :length].all() and not w[:, length:].any()  # the last window is padded to bptt, padding masked
    assert xs[-1].shape == (b, bptt)


def test_stream_remainder_columns_drop_nothing():
    tokens = np.arange(1000, 1024, dtype=np.uint16)  # N-1 = 23 targets over 4 columns: 6, 6, 6, 5
    layout = StreamLayout(len(tokens), 4)
    np.testing.assert_array_equal(layout.lengths, [6, 6, 6, 5])
    source = StreamSteps(tokens, batch_size=4, bptt=4, check=False)
    seen = _targets_seen(source, 0)
    assert sorted(seen) == list(range(1, len(tokens)))  # every token after the first is a target...
    assert set(seen.values()) == {1}  # ...exactly once


def test_windows_mode_covers_every_target_once_and_shuffles_per_epoch():
    tokens = np.arange(500, 500 + 103, dtype=np.uint16)
    source = WindowSteps(tokens, batch_size=4, bptt=10, seed=3)
    for epoch in (0, 1):
        seen = _targets_seen(source, epoch)
        assert sorted(seen) == list(range(1, len(tokens))) and set(seen.values()) == {1}
    first = [source.step(0, i)[0][0][:, 0].tolist() for i in range(source.steps(0))]
    second = [source.step(1, i)[0][0][:, 0].tolist() for i in range(source.steps(1))]
    assert first != second
    again = WindowSteps(tokens, batch_size=4, bptt=10, seed=3)
    assert first == [again.step(0, i)[0][0][:, 0].tolist() for i in range(again.steps(0))]


def test_variable_bptt_is_seeded_and_covers_the_columns():
    tokens = np.arange(3000, dtype=np.uint16)
    a = StreamSteps(tokens, batch_size=5, bptt=20, seed=11, variable_bptt=True)
    b = StreamSteps(tokens, batch_size=5, bptt=20, seed=11, variable_bptt=True)
    w0 = a.windows(0)
    np.testing.assert_array_equal(w0, b.windows(0))
    assert not np.array_equal(w0[:20], a.windows(1)[:20])
    assert w0[0, 0] == 0 and (w0[1:, 0] == w0[:-1, 0] + w0[:-1, 1]).all()  # contiguous
    assert w0[-1, 0] + w0[-1, 1] == a.layout.steps
    assert w0[:-1, 1].min() >= 5 and w0[:, 1].max() <= 60
    seen = _targets_seen(a, 0)
    assert len(seen) == len(tokens) - 1 and set(seen.values()) == {1}


def test_grad_accumulation_fills_the_last_step_with_weight_zero_batches():
    tokens = np.arange(1, 42, dtype=np.uint16)  # 40 targets, B=4 → 10 steps per column, bptt 3 → 4 windows
    source = StreamSteps(tokens, batch_size=4, bptt=3, accum=3, check=False)
    assert source.batches(0) == 4 and source.steps(0) == 2
    last = source.step(0, 1)
    assert len(last) == 3
    assert last[1][2].sum() == 0 and last[2][2].sum() == 0
    assert last[0][2].sum() == 4  # the partial window: one step per column


def test_replicas_get_consecutive_row_slices():
    tokens = np.arange(2000, dtype=np.uint16)
    full = StreamSteps(tokens, batch_size=6, bptt=8)
    split = StreamSteps(tokens, batch_size=6, bptt=8, num_replicas=3)
    for r in range(3):
        np.testing.assert_array_equal(split.step(0, 5, r)[0][0], full.step(0, 5)[0][0][2 * r:2 * r + 2])
    with pytest.raises(ConfigError) as info:
        StreamSteps(tokens, batch_size=6, bptt=8, num_replicas=4)
    assert "use a multiple of 4" in info.value.one_line()


def test_dataset_skips_exactly_to_the_data_position():
    tokens = np.arange(5000, dtype=np.uint16)
    source = StreamSteps(tokens, batch_size=4, bptt=16, accum=2)
    full = [tuple(t.numpy() for batch in el for t in batch) for el in step_dataset(source, 0)]
    tail = [tuple(t.numpy() for batch in el for t in batch) for el in step_dataset(source, 0, start_step=7)]
    assert len(full) == source.steps(0) and len(tail) == len(full) - 7
    arrays = [tuple(a for batch in el for a in batch) for el in step_arrays(source, 0, start_step=7)]
    for a, b, c in zip(full[7:], tail, arrays, strict=True):  # the tf.data and the direct feed agree
        for u, v, w in zip(a, b, c, strict=True):
            np.testing.assert_array_equal(u, v)
            np.testing.assert_array_equal(u, w)


def test_dataset_interleaves_local_replicas_round_robin():
    tokens = np.arange(5000, dtype=np.uint16)
    source = StreamSteps(tokens, batch_size=4, bptt=16, num_replicas=2)
    elements = list(step_dataset(source, 0, replicas=[0, 1]))
    assert len(elements) == 2 * source.steps(0)
    np.testing.assert_array_equal(elements[2][0][0].numpy(), source.step(0, 1, 0)[0][0])
    np.testing.assert_array_equal(elements[3][0][0].numpy(), source.step(0, 1, 1)[0][0])


def test_too_long_bptt_and_too_large_batch_are_data_errors_with_the_fix():
    with pytest.raises(DataError) as info:
        check_stream_fits(50, 2, 64)
    assert "bptt=64 is longer than the train split (50 tokens)" in info.value.one_line()
    assert "\n" not in info.value.one_line()
    with pytest.raises(DataError) as info:
        check_stream_fits(1000, 64, 32)
    line = info.value.one_line()
    assert "64 columns × bptt 32 needs at least 2,049" in line and "train.batch_size to ≤ 31" in line
    with pytest.raises(DataError):
        WindowSteps(np.arange(100, dtype=np.uint16), batch_size=32, bptt=10)
