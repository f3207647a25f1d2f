"""tunesmith.data: every form ``datasets`` takes loads; every bad row is named by file,
line (row for non-line formats) and field, found over Arrow batches."""

import gzip
import json

import pytest

from tunesmith import DataError, RowError
from tunesmith.data import CHECK_BATCH, check, checked_stream, each_row, encode, load_split, require_text
from tunesmith.plugins.data_sources import iter_raw_rows


class TextTask:
    """The smallest v2 task: a text column, encoded as its length."""

    def check_batch(self, batch, options, state):
        each_row(batch, lambda row: require_text(row, "text"))

    def encode_batch(self, batch, tokenizer, state, options, train):
        return {"n": [len(t) for t in batch["text"]]}


def _load_checked(path, **kw):
    split = load_split(str(path), "train", **kw)
    check(split, TextTask(), None, None)
    return split


@pytest.mark.parametrize("content,expected", [
    (b'{"text": "a"}\n{"text": "b"\n', ":2: malformed JSON"),
    (b'{"text": "a"}\n[1, 2]\n', ":2: expected a JSON object"),
    (b'{"text": "a"}\n{"text": "\xff\xfe"}\n', ":2: not valid UTF-8"),
    (b"", "no rows (the file is empty)"),
    (b"\n\n", "no rows"),
    (b'{"text": "a"}\n{"other": 1}\n', ":2: field 'text': missing column 'text'"),
    (b'{"text": "a"}\n\n\n{"text": 42}\n', ":4: field 'text': expected text, got int 42"),   # blank lines count
])
def test_jsonl_errors_name_file_line_field(tmp_path, content, expected):
    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    with pytest.raises(DataError) as err:
        _load_checked(f)
    assert str(f) in str(err.value) and expected in str(err.value), str(err.value)


def test_a_bad_row_past_the_first_batch_names_its_line(tmp_path):
    f = tmp_path / "d.jsonl"
    rows = [{"text": f"row {i}"} for i in range(CHECK_BATCH + 5)]
    rows[CHECK_BATCH + 2] = {"text": "   "}
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=rf"d.jsonl:{CHECK_BATCH + 3}: field 'text': empty text"):
        _load_checked(f)


def test_csv_ragged_row_and_multiline_cells(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\nhello,1\n\"multi\nline\",0\nbad,1,extra\n")
    with pytest.raises(DataError, match=r"d.csv:5: row has 3 fields, the header has 2"):
        _load_checked(f)
    g = tmp_path / "e.csv"
    g.write_text("text,label\nhello,1\n\"multi\nline\",0\n   ,1\n")
    with pytest.raises(DataError, match=r"e.csv:5: field 'text': empty text"):
        _load_checked(g)


def test_csv_keeps_texts_and_types_integers(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\nNA,1\nnull,0\n")
    ds = _load_checked(f).dataset
    assert ds["text"] == ["NA", "null"] and ds["label"] == [1, 0]   # no NaN guessing; ints as ints
    t = tmp_path / "d.tsv"
    t.write_text("text\tlabel\na, b\t1\n")
    assert _load_checked(t).dataset[0] == {"text": "a, b", "label": 1}


def test_every_form_datasets_takes(tmp_path):
    import datasets
    import pandas as pd

    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    ds = datasets.Dataset.from_list(rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    with gzip.open(tmp_path / "z.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict(train=ds, validation=ds).save_to_disk(str(tmp_path / "saved-dict"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    for i in range(3):
        (tmp_path / "parts").mkdir(exist_ok=True)
        (tmp_path / "parts" / f"{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    forms = [tmp_path / "a.json", tmp_path / "z.jsonl.gz", tmp_path / "p.parquet", tmp_path / "saved",
             tmp_path / "saved-dict", arrow]
    for form in forms:
        split = _load_checked(form)
        assert split.dataset["text"] == ["a", "b"], form
    assert len(_load_checked(f"{tmp_path}/parts/*.jsonl").dataset) == 6
    for obj in (ds, datasets.DatasetDict(train=ds), pd.DataFrame(rows)):
        split = load_split(obj, "train")
        check(split, TextTask(), None, None)
        assert split.dataset["label"] == [0, 1] and split.record["fingerprint"]
    assert load_split(datasets.Dataset.from_list(rows).to_iterable_dataset(), "train").streaming


def test_non_line_formats_name_the_row(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"text": "a"}, {"text": ""}]).to_parquet(str(tmp_path / "p.parquet"))
    with pytest.raises(DataError, match=r"p.parquet: row 2: field 'text': empty text"):
        _load_checked(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"<train Dataset>: row 2: field 'text': empty text"):
        check(load_split(datasets.Dataset.from_list([{"text": "a"}, {"text": ""}]), "train"),
              TextTask(), None, None)


def test_files_that_are_not_data(tmp_path):
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        (tmp_path / "a.txt").write_text("x")
        load_split(str(tmp_path / "a.txt"), "train")
    with pytest.raises(DataError, match="file not found"):
        load_split(str(tmp_path / "missing.jsonl"), "train")
    with pytest.raises(DataError, match="write hub:stanfordnlp/sst2"):
        load_split("stanfordnlp/sst2", "train")
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match="is a directory, not a data file"):
        load_split(str(tmp_path / "dir"), "train")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(DataError, match="broken or looping symbolic link"):
        load_split(str(tmp_path / "loop"), "train")
    with pytest.raises(DataError, match="no files match"):
        load_split(str(tmp_path / "*.jsonl"), "train")
    with pytest.raises(DataError, match="has no 'validation' split"):
        import datasets
        load_split(datasets.DatasetDict(train=datasets.Dataset.from_list([{"text": "a"}])), "validation")


def test_hub_reference_offline_is_one_clear_line(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    for spec in ("hub:stanfordnlp/sst2", {"path": "stanfordnlp/sst2", "split": "train"}):
        with pytest.raises(DataError) as err:
            load_split(spec, "train")
        msg = str(err.value)
        assert "hub:stanfordnlp/sst2" in msg and "offline" in msg and "\n" not in msg


def test_huge_text_found_with_arrow(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "ok"}\n{"text": "' + "x" * 1_000_000 + '"}\n')
    with pytest.raises(DataError, match="big.jsonl:2: field 'text': text of 1,000,000 characters"):
        _load_checked(big)


def test_streaming_checks_rows_as_they_stream(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"text": "ok" if i != 1500 else ""}) + "\n" for i in range(2000)))
    split = load_split(str(f), "train", streaming=True)
    assert split.streaming
    stream = checked_stream(split, TextTask(), None, None)
    with pytest.raises(DataError, match=r"d.jsonl:1501: field 'text': empty text"):
        for _ in stream:
            pass


def test_encode_maps_batches_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "abc"}\n{"text": "de"}\n')
    split = _load_checked(f)
    out = encode(split, TextTask(), None, {}, None, train=True, cache_key="k" * 64)
    assert out.column_names == ["n"] and out["n"] == [3, 2]
    assert list((tmp_path / "cache" / "preprocessed").rglob("*.arrow"))   # written once, reused by key
    again = encode(split, TextTask(), None, {}, None, train=True, cache_key="k" * 64)
    assert again["n"] == [3, 2]


def test_raw_rows_for_diagnosis(tmp_path):
    f = tmp_path / "d.json"
    f.write_text('[{"text": "a", "label": 0},\n  oops]')
    with pytest.raises(DataError, match=r"d.json:2: invalid JSON"):
        list(iter_raw_rows(str(f)))
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(DataError, match="nested too deeply|malformed JSON"):
        _load_checked(deep)


def test_row_error_carries_its_row():
    with pytest.raises(RowError) as err:
        each_row({"text": ["a", "b", ""]}, lambda row: require_text(row, "text"))
    assert err.value.row == 2 and err.value.field == "text"


def test_one_pass_reads_files_not_the_map(tmp_path):
    """arrow_batches reads a dataset's own Arrow files with buffered reads, and falls back to
    the table for anything the files are not exactly (a selection, a slice): same values."""
    import datasets

    from tunesmith import data

    rows = {"length": [i % 7 + 1 for i in range(2500)], "text": [f"row {i}" for i in range(2500)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"), max_shard_size="20KB")
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert len(ds.cache_files) > 1 and data._plain_files(ds) == [f["filename"] for f in ds.cache_files]
    assert data.column_list(ds, "length") == rows["length"]
    assert list(data.column_values(ds, "text")) == rows["text"]
    for view in (ds.select(range(10, 60)), ds.select([5, 3, 1]), ds.remove_columns("text"),
                 datasets.Dataset.from_dict(rows)):
        assert data._plain_files(view) is None
        assert data.column_list(view, "length") == list(view["length"])
    assert data.column_list(ds, "missing") is None


def test_the_training_order_is_transformers_own(tmp_path):
    """The samplers over the length list read once yield the stock Trainer's order, also
    when the Trainer has dropped the ``length`` column the model does not take."""
    import datasets
    import torch
    import transformers

    from tunesmith.runner import _lengths_read_once

    ds = datasets.Dataset.from_dict({"length": [(i * 37) % 50 + 1 for i in range(700)], "x": list(range(700))})
    ds.save_to_disk(str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    args = transformers.TrainingArguments(str(tmp_path / "out"), per_device_train_batch_size=8, use_cpu=True,
                                          train_sampling_strategy="group_by_length", report_to=[])
    stock = transformers.Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=ds, eval_dataset=ds)
    ours = _lengths_read_once(transformers.Trainer)(model=torch.nn.Linear(1, 1), args=args, train_dataset=ds,
                                                    eval_dataset=ds)
    dropped = ds.remove_columns(["length"])   # what the Trainer hands its samplers
    orders = []
    for sampler_of in (lambda: stock._get_train_sampler(ds), lambda: ours._get_train_sampler(dropped)):
        torch.manual_seed(3)
        orders.append(list(sampler_of()))
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(700))
    assert isinstance(ours._get_train_sampler(dropped).lengths, list)
    assert list(stock._get_eval_sampler(ds)) == list(ours._get_eval_sampler(dropped))


class MemorySource:
    """A plugin's data source: ``memory:NAME`` rows kept in this process, one "line" per row."""

    name = "memory"
    description = "memory:NAME rows of this test"
    tables = {"bad": [{"text": "fine"}, {"text": "fine"}, {"text": ""}]}

    def matches(self, spec) -> bool:
        return isinstance(spec, str) and spec.startswith("memory:")

    def load(self, spec, name, streaming):
        import datasets

        from tunesmith.data import Split

        return Split(name, datasets.Dataset.from_list(self.tables[spec[7:]]), spec)

    def locate(self, split, index):
        return "memory.txt", 100 + index, None


def test_a_plugin_data_source_loads_before_the_built_ins_and_locates_bad_rows():
    from tunesmith import UnknownNameError, hookimpl, load_plugins
    from tunesmith.registry import Registry

    class Plugin:
        @hookimpl
        def register_data_sources(self, register):
            register(MemorySource())

    plugins = load_plugins()
    plugins.add(Plugin(), "memory")
    assert list(plugins.registry.data_sources)[0] == "memory"   # tried before "files"
    split = load_split("memory:bad", "train", registry=plugins.registry)
    assert split.source.name == "memory" and len(split.dataset) == 3
    with pytest.raises(DataError, match=r"^memory.txt:102: field 'text': empty text$"):
        check(split, TextTask(), None, None)
    with pytest.raises(UnknownNameError, match="unknown data source for 'memory:bad'; available: none"):
        load_split("memory:bad", "train", registry=Registry())
