"""`tunesmith predict`: streaming JSONL, input order kept, bad rows named or skipped."""

import itertools
import json

import pytest

import tunesmith
from tests.conftest import SAMPLE, read_jsonl, run_cli, write_jsonl
from tests.core.deploy_runs import train_tiny
from tunesmith import DataError
from tunesmith.apps.predict import predict_stream


@pytest.fixture(scope="module")
def run_dir(tiny_bert, sst2_small, tmp_path_factory):
    return train_tiny(tiny_bert, sst2_small, tmp_path_factory.mktemp("predict") / "run")


def test_cli_round_trip_keeps_input_order(run_dir, tmp_path, cli_here):
    texts = [r["text"] for r in read_jsonl(SAMPLE / "validation.jsonl", 40)]
    # mixed forms: objects, JSON strings, raw text lines; a blank line is ignored
    lines = [json.dumps({"text": t, "label": 1}) if i % 3 == 0 else json.dumps(t) if i % 3 == 1 else t
             for i, t in enumerate(texts)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = run_cli("predict", run_dir, "--input", src, "--output", out, "--batch-size", 3)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = read_jsonl(out)
    # one at a time (no batching, no sorting) is the reference for order and scores
    predictor = tunesmith.load(run_dir)
    expected = [predictor.predict([t], batch_size=1)[0] for t in texts]
    assert [g["label"] for g in got] == [e["label"] for e in expected]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in expected], abs=1e-5)

    piped = cli_here("predict", run_dir, "--input", "-", input=src.read_text())   # the same CLI, in process
    assert piped.returncode == 0 and [json.loads(x) for x in piped.stdout.splitlines()] == got


def test_bad_row_names_the_line_and_writes_nothing(run_dir, tmp_path, cli_here):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\nok\n{"txt": "oops"}\n{"text": "good"\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    proc = cli_here("predict", run_dir, "--input", src, "--output", out)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err == f"tunesmith: error: {src}:3: field 'text': missing column 'text' (columns: 'txt')"
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*")), "partial output left behind"

    src.write_text('{"text": "fine"}\n{"text": "good"\n', encoding="utf-8")
    proc = cli_here("predict", run_dir, "--input", src)
    assert proc.returncode == 2 and f"{src}:2: malformed JSON" in proc.stderr and proc.stdout == ""


def test_skip_bad_rows_reports_how_many(run_dir, tmp_path, cli_here):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "fine"}\n{"txt": "x"}\n[1, 2]\n{"text": ""}\n"a good film"\n{"text": 3}\n',
                   encoding="utf-8")
    proc = cli_here("predict", run_dir, "--input", src, "--skip-bad-rows")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 2
    assert "skipped 4 bad row(s)" in proc.stderr and "line 2, 3, 4, 6" in proc.stderr


def test_streaming_holds_one_chunk(run_dir):
    """An endless input yields answers after each chunk: nothing reads the whole input."""
    predictor = tunesmith.load(run_dir)
    consumed = itertools.count()

    def endless():
        for i in consumed:
            yield f"sentence number {i}\n"

    got = []

    class Enough(Exception):
        pass

    def write(answer):
        got.append(answer)
        if len(got) == 50:
            raise Enough

    with pytest.raises(Enough):
        predict_stream(predictor, endless(), "<gen>", write, batch_size=8, chunk_size=64)
    assert next(consumed) <= 65   # one chunk read, not the (infinite) input


def test_stream_error_is_a_data_error(run_dir):
    predictor = tunesmith.load(run_dir)
    with pytest.raises(DataError, match=r"^f.jsonl:2: field 'text': empty text$"):
        predict_stream(predictor, ['{"text": "a"}\n', '{"text": " "}\n'], "f.jsonl", lambda r: None)


def test_progress_bar_on_long_inputs(run_dir, tmp_path):
    src = write_jsonl(tmp_path / "long.jsonl", [{"text": f"a rather long sentence {i} " * 8} for i in range(3000)])
    proc = run_cli("predict", run_dir, "--input", src, "--output", tmp_path / "o.jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3000/3000" in proc.stderr and "rows" in proc.stderr
    quiet = run_cli("predict", run_dir, "--input", src, "--output", tmp_path / "o.jsonl", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr[-2000:]   # no bar of any library
