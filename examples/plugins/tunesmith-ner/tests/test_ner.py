"""tunesmith-ner's own tests: unit tests of alignment, entities and the metric, and the
tunesmith conformance kit (tunesmith.testing) on a tiny random BERT.

Run with the plugin installed: ``pip install -e . && pytest tests``. The data is the
CoNLL-2003 sample in ``shared/data/ner`` beside the tunesmith repository (or the folder
named by ``TUNESMITH_NER_DATA``); only its first rows are used here.
"""

import json
import os
from pathlib import Path

import pytest

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(_var, "1")

import tunesmith_ner  # noqa: E402
from tunesmith import DataError, RowError  # noqa: E402
from tunesmith.testing import check_task, fresh_plugins, tiny_run_config, write_jsonl  # noqa: E402
from tunesmith_ner.entities import get_entities  # noqa: E402
from tunesmith_ner.task import NerOptions, TokenClassification, _first_subtoken_labels  # noqa: E402

DATA = Path(os.environ.get("TUNESMITH_NER_DATA") or Path(__file__).resolve().parents[5] / "shared" / "data" / "ner")
TASK = TokenClassification()
OPTS = NerOptions()


def _rows(name, n):
    path = DATA / f"{name}.jsonl"
    if not path.is_file():
        pytest.fail(f"CoNLL sample not found at {path}; set TUNESMITH_NER_DATA")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


@pytest.fixture(scope="module")
def ner_small(tmp_path_factory):
    d = tmp_path_factory.mktemp("ner")
    return {"train": write_jsonl(d / "train.jsonl", _rows("train", 48)),
            "validation": write_jsonl(d / "validation.jsonl", _rows("validation", 16))}


@pytest.fixture
def plugins():
    # the installed plugin comes through its entry point; a source checkout is added in place
    return fresh_plugins(tunesmith_ner)


def test_entities_read_like_seqeval():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "I-MISC", "I-MISC"]
    assert get_entities(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5), ("ORG", 6, 6), ("MISC", 8, 9)]
    assert get_entities(["O", "O"]) == [] and get_entities(["B-X"]) == [("X", 0, 0)]


def test_entity_f1_metric_module():
    import evaluate

    metric = evaluate.load(str(tunesmith_ner.METRICS / "entity_f1"))
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-MISC"]]
    metric.add_batch(predictions=preds[:1], references=refs[:1])
    metric.add_batch(predictions=preds[1:], references=refs[1:])
    out = metric.compute()
    # 2 correct of 3 predicted, 3 gold; a partial span would not count
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3) and out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1_PER"] == 1.0 and out["f1_LOC"] == 0.0 and out["f1_MISC"] == 0.0
    partial = evaluate.load(str(tunesmith_ner.METRICS / "entity_f1")).compute(
        predictions=[["B-PER", "O"]], references=[["B-PER", "I-PER"]])
    assert partial["f1"] == 0.0


def test_first_subtoken_gets_the_label(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    enc = tok([["EU", "rejects", "lamb"]], is_split_into_words=True)
    labels = _first_subtoken_labels(enc.word_ids(0), [3, 0, 5])
    word_ids = enc.word_ids(0)
    assert labels[0] == -100 and labels[-1] == -100          # [CLS], [SEP]
    firsts = [i for i, w in enumerate(word_ids) if w is not None and (i == 0 or word_ids[i - 1] != w)]
    assert [labels[i] for i in firsts] == [3, 0, 5]
    assert all(labels[i] == -100 for i in range(len(labels)) if i not in firsts)
    assert len(word_ids) > 5   # words really were split into several sub-tokens


@pytest.mark.parametrize("row, field, message", [
    ({"ner_tags": ["O"]}, "tokens", "missing column 'tokens'"),
    ({"tokens": "EU rejects", "ner_tags": ["B-ORG", "O"]}, "tokens", "expected a non-empty list of words"),
    ({"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG"]}, "ner_tags", "1 tags for 2 words"),
    ({"tokens": ["EU"], "ner_tags": ["B_ORG"]}, "ner_tags", "tag 0 = 'B_ORG' is not a BIO tag"),
    ({"tokens": ["EU"], "ner_tags": [3]}, "ner_tags", "integer tags need data.label_names"),
    ({"tokens": ["EU", ""], "ner_tags": ["O", "O"]}, "tokens", "word 1 must be a non-empty string"),
])
def test_row_errors_name_the_field(row, field, message):
    with pytest.raises(RowError, match=message) as err:
        TASK.check_row(row, OPTS)
    assert err.value.field == field


def _ds(rows):
    """Training rows as the task receives them in plugin API 2: a datasets.Dataset."""
    import datasets

    return datasets.Dataset.from_list(rows)


def test_setup_completes_bio_pairs_and_validation_tags_must_be_known():
    state = TASK.setup(_ds([{"tokens": ["a", "b"], "ner_tags": ["B-PER", "O"]}]), OPTS)
    assert state["labels"] == ["O", "B-PER", "I-PER"]
    TASK.check_row({"tokens": ["a", "b"], "ner_tags": ["B-PER", "I-PER"]}, OPTS, state)
    with pytest.raises(RowError, match="tag 0 = 'B-LOC' does not occur in the training data"):
        TASK.check_row({"tokens": ["a"], "ner_tags": ["B-LOC"]}, OPTS, state)
    with pytest.raises(RowError, match="no entity tags"):
        TASK.setup(_ds([{"tokens": ["a"], "ner_tags": ["O"]}]), OPTS)


def test_integer_tags_with_label_names():
    opts = NerOptions(label_names=["O", "B-PER", "I-PER"])
    TASK.check_row({"tokens": ["Ann", "Lee"], "ner_tags": [1, 2]}, opts)
    assert TASK.setup(_ds([{"tokens": ["Ann"], "ner_tags": [1]}]), opts)["labels"] == ["O", "B-PER", "I-PER"]
    with pytest.raises(RowError, match="not an index into data.label_names"):
        TASK.check_row({"tokens": ["Ann"], "ner_tags": [7]}, opts)


def test_character_spans_of_text_and_of_tokens():
    words, text, spans = TASK.input_words("  Peter  Blackburn went", OPTS)
    assert words == ["Peter", "Blackburn", "went"] and [text[a:b] for a, b in spans] == words
    words, text, spans = TASK.input_words({"tokens": ["EU", "rejects", "it"]}, OPTS)
    assert text == "EU rejects it" and spans == [(0, 2), (3, 10), (11, 13)]


def test_conformance_kit(plugins, tiny_bert, ner_small, tmp_path):
    """The whole contract: registration, train → save → reload → identical predictions
    (full and LoRA), resume from a checkpoint, clear errors for malformed rows and inputs."""
    check_task("token-classification", model=tiny_bert, train=ner_small["train"],
               validation=ner_small["validation"], tmp_path=tmp_path, plugins=plugins,
               strategies=("full", "lora"),
               bad_rows=[({"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG"]}, "ner_tags"),
                         ({"tokens": ["EU"], "ner_tags": [0]}, "ner_tags"),
                         ({"tokens": ["EU"], "ner_tags": ["X-ORG"]}, "ner_tags")])


def test_predicted_entities_point_into_the_text(plugins, tiny_bert, ner_small, tmp_path):
    import tunesmith

    cfg = tiny_run_config("ner", tiny_bert, ner_small["train"], ner_small["validation"], tmp_path / "run",
                      epochs=3)
    result = tunesmith.train(cfg, plugins=plugins, quiet=True)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())["eval"]
    assert {"precision", "recall", "f1", "accuracy"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("precision", "recall", "f1", "accuracy"))
    predictor = tunesmith.load(result.run_dir, plugins=plugins)
    text = "EU  rejects German call to boycott British lamb ."
    tokens = {"tokens": text.split()}
    for item, source in ((text, text), (tokens, " ".join(tokens["tokens"]))):
        (out,) = predictor.predict([item])
        assert len(out["tags"]) == 9 and all(t in predictor.state["labels"] for t in out["tags"])
        for ent in out["entities"]:
            assert source[ent["start"]:ent["end"]] == ent["text"]
            first, end = ent["words"]
            assert ent["text"].split() == source.split()[first:end]
            assert 0 < ent["score"] <= 1
    with pytest.raises(DataError, match="expected a non-empty list of words"):
        predictor.predict([{"tokens": []}])
