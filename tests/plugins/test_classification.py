import pytest
import torch

from tunesmith import RowError
from tunesmith.plugins.classification import ClassificationOptions, TextClassification

task = TextClassification()
opts = ClassificationOptions()


@pytest.mark.parametrize("row,field,message", [
    ({"label": 1}, "text", "missing column 'text'"),
    ({"text": 3, "label": 1}, "text", "expected text, got int"),
    ({"text": "  ", "label": 1}, "text", "empty text"),
    ({"text": "x"}, "label", "missing column 'label'"),
    ({"text": "x", "label": 1.5}, "label", "label must be an int or a string"),
    ({"text": "x", "label": True}, "label", "label must be an int or a string"),
    ({"text": "x", "label": [1, {"a": 1}]}, "label", "labels must be ints or strings"),
])
def test_row_errors_name_the_field(row, field, message):
    with pytest.raises(RowError) as err:
        task.check_row(row, opts)
    assert err.value.field == field and message in str(err.value)


def ds(rows):
    """Rows as datasets loads them (mixed types become a Json column, as from a JSON file)."""
    import datasets

    return datasets.Dataset.from_generator(_gen, gen_kwargs={"rows": rows})


def _gen(rows):
    yield from rows


def test_setup_int_string_and_named_labels():
    assert task.setup(ds([{"label": 2}, {"label": 0}, {"label": 1}]), opts)["labels"] == ["0", "1", "2"]
    assert task.setup(ds([{"label": "pos"}, {"label": "neg"}]), opts) == {
        "labels": ["neg", "pos"], "int_labels": False, "multi_label": False}
    named = ClassificationOptions(label_names=["bad", "good"])
    assert task.setup(ds([{"label": 0}, {"label": 1}]), named)["labels"] == ["bad", "good"]
    with pytest.raises(RowError, match="label 2 is not an index into data.label_names"):
        task.check_row({"text": "x", "label": 2}, named)
    with pytest.raises(RowError, match="mixes integer and string labels"):
        task.setup(ds([{"label": 0}, {"label": "a"}]), opts)
    with pytest.raises(RowError, match="need at least 2 classes"):
        task.setup(ds([{"label": "x"}, {"label": "x"}]), opts)


def test_one_stray_label_does_not_build_a_huge_head():
    """Integer labels decide the class count: each class must occur (50000 or 10**9 would
    otherwise build a 50,001-class head, or exhaust memory)."""
    for stray in (50_000, 10**9):
        with pytest.raises(RowError, match=rf"{stray:,} of the {stray + 1:,} classes never occur|"
                                           rf"classes never occur in the 3 training rows"):
            task.setup(ds([{"label": 0}, {"label": 1}, {"label": stray}]), opts)
    named = ClassificationOptions(label_names=["bad", "good", "meh"])
    with pytest.raises(RowError, match="every entry of data.label_names must occur"):
        task.setup(ds([{"label": 0}, {"label": 1}]), named)


def test_column_check_and_row_check_agree():
    """The fast column-by-column pass accepts exactly what the row check accepts."""
    from tunesmith.data import rows_of

    batches = [{"text": ["a", "b"], "label": [0, 1]}, {"text": ["a", " "], "label": [0, 1]},
               {"text": ["a", 3], "label": [0, 1]}, {"text": ["a", "b"], "label": [0, 1.5]},
               {"text": ["a", "b"], "label": [0, None]}, {"text": ["a", None], "label": [0, 1]}]
    for batch in batches:
        by_row = all(_accepts(row) for _, row in rows_of(batch))
        assert task._clean(batch, opts, None) <= by_row, batch   # fast says clean only when rows agree
        if by_row:
            task.check_batch(batch, opts)
        else:
            with pytest.raises(RowError) as err:
                task.check_batch(batch, opts)
            assert err.value.row == 1


def _accepts(row) -> bool:
    try:
        task.check_row(row, opts)
        return True
    except RowError:
        return False


def test_validation_label_must_be_known():
    state = task.setup(ds([{"label": "a"}, {"label": "b"}]), opts)
    task.check_row({"text": "x", "label": "a"}, opts, state)
    with pytest.raises(RowError, match="label 'c' does not occur in the training data"):
        task.check_row({"text": "x", "label": "c"}, opts, state)


def test_streaming_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score
    from tunesmith import load_plugins

    modules = load_plugins().registry.metrics_for(task.name)
    acc = task.metrics({"multi_label": False, "labels": ["a", "b", "c"]}, opts, modules)
    torch.manual_seed(0)
    logits, labels = torch.randn(50, 3), torch.randint(0, 3, (50,))
    for i in range(0, 50, 16):
        acc.add_batch(logits[i:i + 16], labels[i:i + 16])
    preds = logits.argmax(-1)
    result = acc.compute()
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert result["f1"] == pytest.approx(f1_score(labels, preds, average="macro"))


def test_multilabel_metrics_use_threshold():
    from tunesmith import load_plugins

    modules = load_plugins().registry.metrics_for(task.name)
    acc = task.metrics({"multi_label": True, "labels": ["a", "b"]}, ClassificationOptions(threshold=0.5), modules)
    acc.add_batch(torch.tensor([[5.0, -5.0], [5.0, 5.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    result = acc.compute()
    assert result["accuracy"] == 0.5 and result["f1_micro"] == pytest.approx(0.8)


def test_predict_inputs_checked():
    with pytest.raises(RowError, match="missing column 'text'"):
        task.input_text({"sentence": "x"}, opts)
    with pytest.raises(RowError, match="expected a text or an object"):
        task.input_text(3, opts)
    assert task.input_text("plain", opts) == ("plain", None)
