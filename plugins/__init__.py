"""Built-in tunesmith plugins, loaded through the same entry points as third-party ones.

What only the built-in tasks share (the core has no use for it): :func:`in_batches`.
"""


def in_batches(model, items: list, batch_size: int, run_batch, length=len) -> list:
    """``run_batch(chunk) -> one result per item`` over ``items`` in batches of similar
    ``length`` (little padding), under ``torch.inference_mode`` with ``model`` in eval mode
    (its mode restored after); the results in the items' order. The built-in tasks' ``predict`` use it."""
    import torch

    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    out: list = [None] * len(items)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                for i, result in zip(idx, run_batch([items[i] for i in idx])):
                    out[i] = result
    finally:
        model.train(was_training)
    return out
