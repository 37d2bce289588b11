"""ULMFiT fine-tuning policy (Howard & Ruder 2018): which layer groups train in an epoch, and at what learning rate.

Layer groups run bottom to top, `[embedding, lstm_0, ..., lstm_{n-1}, head]`; depth counts from the top (head = 0).

* Gradual unfreezing (`finetune.gradual_unfreeze`): epoch 0 trains the head only, each further epoch unfreezes the
  next group down, until everything trains (epoch e trains the top e+1 groups).
* Discriminative learning rates (`finetune.discriminative_lr` = d): a group at depth k trains at lr / d^k.

Both are applied by the document trainer with one optimizer per group (each at lr × multiplier) — exact for SGD,
Adam and AdamW alike. Scaling the gradients instead would be a no-op for Adam, whose update is invariant to a
constant gradient scale.
"""

from __future__ import annotations


def lr_multipliers(num_groups: int, discriminative_lr: float | None) -> list[float]:
    """Per-group multipliers of the scheduled lr, bottom to top (the top group is always 1.0)."""
    if num_groups < 1:
        raise ValueError(f"num_groups must be >= 1 (got {num_groups})")
    divisor = float(discriminative_lr or 1.0)
    return [1.0 / divisor ** (num_groups - 1 - index) for index in range(num_groups)]


def trainable_groups(epoch: int, num_groups: int, gradual_unfreeze: bool) -> list[bool]:
    """Which groups (bottom to top) train during 0-based `epoch`."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0 (got {epoch})")
    if not gradual_unfreeze:
        return [True] * num_groups
    unfrozen = min(num_groups, epoch + 1)
    return [index >= num_groups - unfrozen for index in range(num_groups)]


def epochs_to_unfreeze_all(num_groups: int, gradual_unfreeze: bool) -> int:
    """Epochs needed before every group has trained at least once."""
    return num_groups if gradual_unfreeze else 1


def describe(names: list[str], epochs: int, discriminative_lr: float | None, gradual_unfreeze: bool) -> list[list]:
    """Rows [group, lr multiplier, first epoch it trains] for the start-of-run report."""
    multipliers = lr_multipliers(len(names), discriminative_lr)
    rows = []
    for index, name in enumerate(names):
        first = next((e for e in range(max(epochs, len(names))) if trainable_groups(e, len(names),
                                                                                  gradual_unfreeze)[index]), None)
        shown = "never (too few epochs)" if first is None or first >= epochs else str(first + 1)
        rows.append([name, f"{multipliers[index]:.4g}", shown])
    return rows


def language_model_groups(model) -> list[tuple[str, list]]:
    """Layer groups of an `LSTMLanguageModel`: embedding, each LSTM, and the output layer (head, or the tie
    projection and output bias when the embedding is tied — the shared matrix stays in the embedding group)."""
    groups = [("embedding", list(model.embedding.weights))]
    groups += [(lstm.name, list(lstm.weights)) for lstm in model.lstms]
    if model.head is not None:
        head = list(model.head.weights)
    else:
        head = ([] if model.projection is None else list(model.projection.weights)) + [model.output_bias]
    groups.append(("head", head))
    return groups
