"""Load a run directory and predict, batched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import rundir
from .config import GenerationConfig, attach_generation, build_dataclass
from .errors import ConfigError, RunDirError
from .manager import Plugins, load_plugins


class Predictor:
    """``Predictor(run_dir).predict(inputs)``: the task's answers for a list of inputs
    (rows as in the training data without the label, or plain strings)."""

    def __init__(self, run_dir, plugins: Plugins | None = None, device: str | None = None):
        self.run_dir = Path(run_dir)
        self.manifest = rundir.read_manifest(self.run_dir)
        model_dir = self.run_dir / rundir.MODEL
        if self.manifest.get("status") != "complete" or not model_dir.is_dir():
            raise RunDirError(f"run {str(run_dir)!r} did not finish (no saved model); "
                              f"train it again or resume it")
        self.plugins = plugins or load_plugins()
        registry = self.plugins.registry
        self.task = registry.task(self.manifest["task"])
        self.state = self.manifest["task_state"]
        problems: list[str] = []
        data_opts = {k: v for k, v in self.manifest["config"]["data"].items()
                     if k not in ("train", "validation", "test")}
        self.options = build_dataclass(self.task.options, data_opts, "data.", problems)
        attach_generation(self.options, build_dataclass(
            GenerationConfig, self.manifest["config"].get("generation") or {}, "generation.", problems))
        if problems:
            raise ConfigError(problems, source=str(self.run_dir / rundir.MANIFEST))
        self.trust_remote_code = bool(self.manifest.get("trust_remote_code", False))
        self.model, self.tokenizer = self._load(model_dir, registry)
        if device:
            self.model.to(device)
        self.model.eval()

    def _load(self, model_dir: Path, registry) -> tuple[Any, Any]:
        from .runner import load_tokenizer

        tokenizer = load_tokenizer(str(model_dir), self.trust_remote_code)
        kwargs = {"trust_remote_code": self.trust_remote_code}
        if (model_dir / "adapter_config.json").is_file():
            # an adapter run: rebuild the base model with the task head, then load the
            # adapter and the saved head (modules_to_save) over it
            from peft import PeftModel

            ref = self.manifest["model"]["reference"]
            base_path = registry.model_source_for(ref).resolve(ref)
            base = self.task.build_model(base_path, tokenizer, self.state, self.options, kwargs)
            return PeftModel.from_pretrained(base, str(model_dir)), tokenizer
        return self.task.build_model(str(model_dir), tokenizer, self.state, self.options, kwargs), tokenizer

    def predict(self, inputs: list, batch_size: int = 32) -> list:
        if not isinstance(inputs, list):
            inputs = [inputs]
        return self.task.predict(self.model, self.tokenizer, inputs, self.state, self.options, batch_size)

    def evaluate(self, path, batch_size: int = 64, limit: int | None = None) -> dict:
        """The task's metrics on a labelled data file, as ``metrics.json`` reports them."""
        import torch
        from torch.utils.data import DataLoader

        from .data import load_rows

        rows = load_rows(path, check=lambda r: self.task.check_row(r, self.options, self.state), limit=limit)
        custom = getattr(self.task, "evaluate", None)
        if custom is not None:
            return custom(self.model, self.tokenizer, rows, self.state, self.options, batch_size)
        dataset = self.task.encode(rows, self.tokenizer, self.state, self.options, train=False)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.task.collator(self.tokenizer, self.options))
        acc = self.task.metrics(self.state, self.options, self.plugins.registry.metrics_for(self.task.name))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for batch in loader:
                labels = batch.pop("labels")
                logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
                acc.add_batch(logits.cpu(), labels)
        return {**acc.compute(), "rows": len(rows)}
