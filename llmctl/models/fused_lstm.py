"""A CPU kernel for a Keras `LSTM` layer over a whole window: the same function, less work per time step.

Keras runs an LSTM without cuDNN as a `tf.while_loop` over its cell, and autodiff turns every step of that loop into
four matmuls on the backward pass (input, recurrent and both weight gradients) plus two on the forward pass. Here:

- forward: the input projection `x @ kernel + bias` of the whole window is one matmul before the loop; inside the
  loop only `h @ recurrent_kernel` and the gate arithmetic remain;
- backward (`tf.custom_gradient`): the loop computes only the gate gradients and `dz @ recurrent_kernel.T`; the
  kernel, recurrent-kernel, bias and input gradients are whole-window matmuls after it;
- the recurrence can be XLA-compiled (`xla=True`), which fuses the gate arithmetic of each step; XLA compiles once
  per window shape, so it is for fixed-length windows.

Timings against the Keras layer: docs/benchmarks.md. Gradients equal the Keras layer's within float32
rounding (tests/models/test_fused_lstm.py). Gate order and activations are Keras' (i, f, g, o; sigmoid / tanh), and
the weights are the layer's own variables, so checkpoints, `.keras` files and the cuDNN kernel on GPUs are unaffected.
"""

from __future__ import annotations

from functools import cache

from llmctl.tfenv import import_tf

tf = import_tf()


def fusable(lstm) -> bool:
    """Whether this Keras LSTM layer computes what `lstm_sequence` computes (plain tanh/sigmoid LSTM, no dropout
    inside the layer, forward in time)."""
    cell = lstm.cell
    return (not cell.dropout and not cell.recurrent_dropout and cell.use_bias and not lstm.go_backwards
            and cell.activation.__name__ == "tanh" and cell.recurrent_activation.__name__ == "sigmoid")


def lstm_sequence(x, h0, c0, kernel, recurrent_kernel, bias, *, xla: bool = False):
    """Run an LSTM over `x` [B, T, D] from state (h0, c0) [B, H]: (outputs [B, T, H], h, c).
    Weights are cast to the dtype of `x` (mixed precision)."""
    dtype = x.dtype
    args = (x, tf.cast(h0, dtype), tf.cast(c0, dtype), tf.cast(kernel, dtype), tf.cast(recurrent_kernel, dtype),
            tf.cast(bias, dtype))
    return (_compiled() if xla else _sequence)(*args)


@cache
def _compiled():
    return tf.function(_sequence, jit_compile=True)


@tf.custom_gradient
def _sequence(x, h0, c0, kernel, recurrent_kernel, bias):
    shape = tf.shape(x)
    batch, steps, width = shape[0], shape[1], shape[2]
    units = tf.shape(h0)[1]
    inputs = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, width])              # [T*B, D], time-major
    projected = tf.reshape(tf.matmul(inputs, kernel) + bias, [steps, batch, 4 * units])

    def step(t, h, c, gates, cells, hiddens):
        z = projected[t] + tf.matmul(h, recurrent_kernel)
        zi, zf, zg, zo = tf.split(z, 4, axis=1)
        i, f, g, o = tf.sigmoid(zi), tf.sigmoid(zf), tf.tanh(zg), tf.sigmoid(zo)
        c = f * c + i * g
        h = o * tf.tanh(c)
        return (t + 1, h, c, gates.write(t, tf.concat([i, f, g, o], 1)), cells.write(t, c),
                hiddens.write(t, h))

    arrays = [tf.TensorArray(x.dtype, size=steps) for _ in range(3)]
    _, h, c, gates, cells, hiddens = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, c0, *arrays))
    gates, cells, hiddens = gates.stack(), cells.stack(), hiddens.stack()    # [T, B, *]

    def grad(d_outputs, d_h, d_c):
        d_hiddens = tf.transpose(d_outputs, [1, 0, 2])
        previous_cells = tf.concat([c0[None], cells[:-1]], 0)
        recurrent_t = tf.transpose(recurrent_kernel)

        def back(k, dh, dc, d_gates):
            t = steps - 1 - k
            i, f, g, o = tf.split(gates[t], 4, axis=1)
            tanh_c = tf.tanh(cells[t])
            dh = dh + d_hiddens[t]
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            dz = tf.concat([dc * g * i * (1 - i), dc * previous_cells[t] * f * (1 - f), dc * i * (1 - g * g),
                            dh * tanh_c * o * (1 - o)], 1)
            return k + 1, tf.matmul(dz, recurrent_t), dc * f, d_gates.write(t, dz)

        _, dh0, dc0, d_gates = tf.while_loop(lambda k, *_: k < steps, back,
                                             (0, d_h, d_c, tf.TensorArray(x.dtype, size=steps)))
        dz = tf.reshape(d_gates.stack(), [-1, 4 * units])                       # [T*B, 4H]
        previous_hiddens = tf.reshape(tf.concat([h0[None], hiddens[:-1]], 0), [-1, units])
        d_inputs = tf.reshape(tf.matmul(dz, kernel, transpose_b=True), [steps, batch, width])
        return (tf.transpose(d_inputs, [1, 0, 2]), dh0, dc0,
                tf.matmul(inputs, dz, transpose_a=True), tf.matmul(previous_hiddens, dz, transpose_a=True),
                tf.reduce_sum(dz, 0))

    return (tf.transpose(hiddens, [1, 0, 2]), h, c), grad
