import pytest

from tunesmith import DataError, RowError
from tunesmith.data import load_rows


def _check(row):
    if "text" not in row:
        raise RowError("text", "missing column 'text'")


@pytest.mark.parametrize("content,expected", [
    (b'{"text": "a"}\n{"text": "b"\n', ":2: malformed JSON"),
    (b'{"text": "a"}\n[1, 2]\n', ":2: expected a JSON object"),
    (b'{"text": "a"}\n{"text": "\xff\xfe"}\n', ":2: not valid UTF-8"),
    (b"", "no rows (the file is empty)"),
    (b"\n\n", "no rows"),
    (b'{"text": "a"}\n{"other": 1}\n', ":2: field 'text': missing column 'text'"),
])
def test_jsonl_errors_name_file_line_field(tmp_path, content, expected):
    f = tmp_path / "d.jsonl"
    f.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_rows(f, check=_check)
    assert str(f) in str(err.value) and expected in str(err.value)


def test_csv_ragged_row(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\nhello,1\n\"multi\nline\",0\nbad,1,extra\n")
    with pytest.raises(DataError, match=r"d.csv:5: row has 3 fields, the header has 2"):
        load_rows(f)


def test_csv_and_json_array_read(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\nhello,1\n")
    assert load_rows(f) == [{"text": "hello", "label": "1"}]
    j = tmp_path / "d.json"
    j.write_text('[{"text": "x", "label": 0}]')
    assert load_rows(j) == [{"text": "x", "label": 0}]


def test_limit_and_huge_text(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n')
    assert len(load_rows(f, limit=2)) == 2
    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "' + "x" * 1_000_000 + '"}\n')
    with pytest.raises(DataError, match="big.jsonl:1: field 'text': text of 1,000,000 characters"):
        load_rows(big)


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        (tmp_path / "a.txt").write_text("x")
        load_rows(tmp_path / "a.txt")
    with pytest.raises(DataError, match="file not found"):
        load_rows(tmp_path / "missing.jsonl")
