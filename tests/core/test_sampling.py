"""The numpy length-grouped sampler orders rows exactly as transformers' does."""

import datasets
import numpy as np
import torch
from transformers.trainer_pt_utils import get_length_grouped_indices

from tunesmith.sampling import ArrayLengthGroupedSampler, length_grouped


def test_same_order_as_transformers():
    rng = np.random.default_rng(0)
    for n, batch in ((1000, 16), (37, 4), (5, 16), (20_000, 32)):
        lengths = rng.integers(1, 64, size=n).tolist()   # many ties: the stable sort matters
        ours = list(ArrayLengthGroupedSampler(lengths, batch, generator=torch.Generator().manual_seed(7)))
        theirs = get_length_grouped_indices(lengths, batch, generator=torch.Generator().manual_seed(7))
        assert ours == theirs, n
        assert len(ArrayLengthGroupedSampler(lengths, batch)) == n


def test_trainer_uses_it_for_a_dataset_with_lengths(tmp_path):
    import transformers

    ds = datasets.Dataset.from_dict({"input_ids": [[1] * k for k in (3, 1, 2, 5)], "length": [3, 1, 2, 5]})
    args = transformers.TrainingArguments(str(tmp_path), per_device_train_batch_size=2, report_to=[],
                                          train_sampling_strategy="group_by_length", use_cpu=True)
    model = torch.nn.Linear(1, 1)
    trainer = length_grouped(transformers.Trainer)(model=model, args=args, train_dataset=ds)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, ArrayLengthGroupedSampler) and sorted(sampler) == [0, 1, 2, 3]
    assert type(trainer).__name__ == "Trainer" and isinstance(trainer, transformers.Trainer)
