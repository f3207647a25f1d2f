"""Length-grouped training order over numpy arrays, for datasets of millions of rows.

transformers' ``LengthGroupedSampler`` holds the lengths, the permutation and every
mega-batch as Python lists of ints: about 0.6 GB of anonymous memory per million rows
(measured with bench/memprof.py), which is what pushed a 5M-row run past 2.5 GB. This
sampler reads the ``length`` column straight from Arrow into numpy and yields the same
indices in the same order (same torch permutation, same stable descending sort per
mega-batch, the longest batch first), at 16 bytes per row.
"""

from __future__ import annotations


class ArrayLengthGroupedSampler:
    """``torch.utils.data.Sampler`` protocol: ``__len__`` and ``__iter__`` of row indices."""

    def __init__(self, lengths, batch_size: int, generator=None):
        import numpy as np

        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import numpy as np
        import torch

        n = len(self.lengths)
        mult = min(n // (self.batch_size * 4), 50) or 1   # transformers' mega-batch size rule
        size = mult * self.batch_size
        order = torch.randperm(n, generator=self.generator).numpy()
        for start in range(0, n, size):
            chunk = order[start:start + size]
            # stable descending by length, as sorted(..., reverse=True) orders equal lengths
            order[start:start + size] = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
        firsts = np.arange(0, n, size)
        longest = firsts[int(np.argmax(self.lengths[order[firsts]]))]
        order[0], order[longest] = order[longest], order[0]   # the longest batch first: OOM early
        for i in order:
            yield int(i)


def length_grouped(trainer_cls):
    """``trainer_cls`` whose length-grouped training sampler is :class:`ArrayLengthGroupedSampler`
    when the training set is a ``datasets.Dataset`` with the length column (else unchanged)."""

    class ArrayLengthGrouped(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            ds = self.train_dataset if train_dataset is None else train_dataset
            column = self.args.length_column_name
            if self.args.train_sampling_strategy == "group_by_length" and hasattr(ds, "with_format") \
                    and hasattr(ds, "__len__") and column in (getattr(ds, "column_names", None) or ()):
                import numpy as np

                lengths = np.asarray(ds.with_format("numpy")[column])   # from Arrow, no Python list
                return ArrayLengthGroupedSampler(lengths, self.args.train_batch_size *
                                                 self.args.gradient_accumulation_steps)
            return super()._get_train_sampler(train_dataset)

    ArrayLengthGrouped.__name__ = ArrayLengthGrouped.__qualname__ = trainer_cls.__name__
    return ArrayLengthGrouped
