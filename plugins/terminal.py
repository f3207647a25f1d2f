"""The terminal plugin: the Trainer's bars on stderr (train steps with loss and main metric, evaluate batches)."""

from __future__ import annotations

from tunesmith import hookimpl
from tunesmith.progress import WIDTH, Terminal, format_metrics


@hookimpl
def configure_trainer(trainer, run):
    """Replace the Trainer's ProgressCallback / PrinterCallback (log dicts on stdout) with
    labelled bars on the run's terminal (``Run.terminal``, a tunesmith.progress.Terminal)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from tunesmith.runner import main_metric

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    terminal = run.terminal
    if terminal is not None and not terminal.quiet:
        trainer.add_callback(trainer_callback(terminal, main_metric(run.task, run.state)))


def trainer_callback(terminal: Terminal, metric: str):
    """``train`` bar (steps, with the latest loss and validation ``metric``), an
    ``evaluate`` bar per evaluation, one line per evaluation with its metrics."""
    from transformers import TrainerCallback

    class TerminalProgress(TrainerCallback):
        def __init__(self):
            self.train_bar = self.eval_bar = None
            self.post: dict = {}

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.train_bar = terminal.bar("train", total=state.max_steps, unit="step")
                self.train_bar.update(state.global_step)   # a resumed run starts where it was

        def on_step_end(self, args, state, control, **kwargs):
            if self.train_bar is not None:
                self.train_bar.update(state.global_step - self.train_bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.train_bar is not None and "loss" in (logs or {}):
                self.post["loss"] = f"{logs['loss']:.4f}"
                self.train_bar.set_postfix(self.post, refresh=True)

        def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
            if not state.is_world_process_zero:
                return
            if self.eval_bar is None:
                total = len(eval_dataloader) if hasattr(eval_dataloader, "__len__") else None
                # during training the bar goes away again; the final evaluation's stays
                self.eval_bar = terminal.bar("evaluate", total=total, unit="batch",
                                             leave=self.train_bar is None)
            self.eval_bar.update(1)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.eval_bar is not None:
                self.eval_bar.close()
                self.eval_bar = None
            if not state.is_world_process_zero or not metrics:
                return
            shown = {k.split("_", 1)[1]: v for k, v in metrics.items() if "_" in k
                     and isinstance(v, (int, float)) and not k.endswith(
                         ("_runtime", "_per_second", "_samples", "_steps"))}
            if self.train_bar is not None:
                if metric in shown:
                    self.post[metric] = f"{shown[metric]:.4f}"
                    self.train_bar.set_postfix(self.post, refresh=True)
                self.train_bar.write(f"{'evaluate':<{WIDTH}} epoch {state.epoch or 0:g}, step "
                                     f"{state.global_step}: {format_metrics(shown)}", file=terminal.out)

        def on_train_end(self, args, state, control, **kwargs):
            if self.train_bar is not None:
                self.train_bar.close()
                self.train_bar = None

    return TerminalProgress()
