"""Load an exported folder the way a user would and predict: the other half of the
export parity check (``tunesmith.apps.export``).

This file is run as a script (``python -I -S parity_worker.py SITE... -- JOB OUT``), in a
Python where tunesmith is not importable, so what it computes comes from transformers /
onnxruntime and the exported files alone. It must never import tunesmith.

Modes (``job["mode"]``):

- ``pipeline-classification``: ``transformers.pipeline("text-classification")`` with
  ``truncation=True`` and all label scores (``top_k=None``).
- ``onnx-classification``: onnxruntime on ``model.onnx`` with the folder's tokenizer;
  softmax (or sigmoid for multi-label) of the logits.
- ``model-outputs``: ``AutoModelFor<Kind>.from_pretrained`` on given token ids; the named
  output tensors (e.g. QA start/end logits), per row, unpadded.
- ``generate``: ``AutoModelFor<Kind>.from_pretrained`` + ``generate()`` with nothing but
  the folder's ``generation_config.json``; decoded text.
"""

import json
import sys


def _classification_pipeline(job):
    from transformers import pipeline

    pipe = pipeline(job["pipeline_task"], model=job["folder"], device="cpu")
    items = [{"text": t, "text_pair": p} if p is not None else t for t, p in job["inputs"]]
    out = pipe(items, batch_size=16, truncation=True, top_k=None)
    return [{d["label"]: float(d["score"]) for d in row} for row in out]


def _classification_onnx(job):
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoConfig, AutoTokenizer

    folder = job["folder"]
    tok = AutoTokenizer.from_pretrained(folder)
    labels = AutoConfig.from_pretrained(folder).id2label
    session = ort.InferenceSession(f"{folder}/{job.get('file', 'model.onnx')}",
                                   providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    results = []
    inputs = job["inputs"]
    for start in range(0, len(inputs), 32):
        chunk = inputs[start:start + 32]
        second = [p for _, p in chunk] if chunk[0][1] is not None else None
        enc = tok([t for t, _ in chunk], second, padding=True, truncation=True, return_tensors="np")
        logits = session.run(None, {n: enc[n].astype(np.int64) for n in names})[0].astype(np.float64)
        if job.get("multi_label"):
            probs = 1 / (1 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
        results += [{labels[j]: float(p[j]) for j in range(len(p))} for p in probs]
    return results


def _auto_class(kind):
    import transformers

    return getattr(transformers, f"AutoModelFor{kind}")


def _model_outputs(job):
    import torch

    model = _auto_class(job["kind"]).from_pretrained(job["folder"]).eval()
    results = []
    with torch.no_grad():
        for batch in job["batches"]:
            width = max(len(ids) for ids in batch["input_ids"])
            tensors = {k: torch.tensor([row + [job["pad"].get(k, 0)] * (width - len(row)) for row in rows])
                       for k, rows in batch.items()}
            out = model(**tensors)
            for i, ids in enumerate(batch["input_ids"]):
                results.append({name: getattr(out, name)[i, :len(ids)].float().tolist()
                                for name in job["outputs"]})
    return results


def _generate(job):
    import torch
    from transformers import AutoTokenizer

    folder = job["folder"]
    tok = AutoTokenizer.from_pretrained(folder)
    model = _auto_class(job["kind"]).from_pretrained(folder).eval()
    prompts = job["inputs"]
    order = sorted(range(len(prompts)), key=lambda i: job["sort_keys"][i])
    out = [None] * len(prompts)
    with torch.no_grad():
        for start in range(0, len(order), job["batch_size"]):
            idx = order[start:start + job["batch_size"]]
            if job["left_padded_ids"]:   # decoder-only: the prompt ids, padded on the left
                rows = [prompts[i] for i in idx]
                width = max(map(len, rows))
                ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
                gen = model.generate(input_ids=ids, attention_mask=mask)[:, width:]
            else:
                enc = tok([prompts[i] for i in idx], truncation=True, max_length=job["max_source_length"],
                          padding=True, return_tensors="pt")
                gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            texts = tok.batch_decode(gen, skip_special_tokens=True,
                                     clean_up_tokenization_spaces=job["clean_up_tokenization_spaces"])
            for i, text in zip(idx, texts):
                out[i] = text.strip()
    return out


MODES = {"pipeline-classification": _classification_pipeline, "onnx-classification": _classification_onnx,
         "model-outputs": _model_outputs, "generate": _generate}


def main(argv):
    split = argv.index("--")
    sys.path.extend(argv[:split])   # site-packages without its .pth files (an editable tunesmith)
    job_path, out_path = argv[split + 1:split + 3]
    import importlib.util

    job = json.load(open(job_path))
    # recorded, not enforced: a regular (non-editable) install puts tunesmith on that path,
    # but this script never imports it either way
    importable = importlib.util.find_spec("tunesmith") is not None
    result = {"predictions": MODES[job["mode"]](job), "tunesmith_importable": importable}
    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1:])
