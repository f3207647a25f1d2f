"""What the plugins registered, keyed by name, with who registered it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, PluginError, UnknownNameError
from .protocols import member, near_miss


# optional task methods whose parameters plugin API 2 changed: they now receive what they need
SIGNATURES = {"trainer_class": ("options", "modules"),
              "evaluate": ("model", "tokenizer", "dataset", "state", "options", "batch_size", "modules")}


def _accepts(fn, params) -> bool:
    import inspect

    try:
        inspect.signature(fn).bind(*params)
    except TypeError:
        return False
    except ValueError:   # no signature (a builtin): trust it
        return True
    return True


@dataclass
class Entry:
    kind: str           # "task", "strategy", "metric", "model source", "data source"
    name: str
    obj: Any
    plugin: str         # plugin (entry point) name
    distribution: str   # distribution that ships the plugin
    version: str


@dataclass
class Registry:
    tasks: dict[str, Entry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)      # alias -> task name
    strategies: dict[str, Entry] = field(default_factory=dict)
    metrics: dict[tuple[str, str], Entry] = field(default_factory=dict)
    model_sources: dict[str, Entry] = field(default_factory=dict)
    data_sources: dict[str, Entry] = field(default_factory=dict)

    def _add(self, table: dict, key, entry: Entry) -> None:
        _refuse_near_misses(entry)
        if key in table:
            other = table[key]
            raise PluginError(entry.plugin, f"{entry.kind} {entry.name!r} is already registered "
                                            f"by plugin {other.plugin!r} ({other.distribution}); "
                                            f"disable one of them with TUNESMITH_DISABLE_PLUGINS")
        table[key] = entry

    def add_task(self, entry: Entry) -> None:
        v1 = [m for m in ("check_row", "encode") if hasattr(entry.obj, m)]
        if v1 and not all(hasattr(entry.obj, m) for m in ("check_batch", "encode_batch")):
            # plugin API 1 handed tasks lists of row dicts; API 2 hands datasets batches
            raise PluginError(entry.plugin, f"task {entry.name!r} is written for tunesmith plugin API 1 "
                                            f"(it defines {' and '.join(v1)}, not check_batch and "
                                            "encode_batch); this tunesmith needs plugin API 2: see "
                                            "docs/plugins.md, 'Plugin API 2'")
        for name, params in SIGNATURES.items():   # members whose parameters changed in API 2
            fn = member(entry.obj, name)
            if callable(fn) and not _accepts(fn, params):
                raise PluginError(entry.plugin, f"task {entry.name!r}: {name} must take ({', '.join(params)}) "
                                                "in tunesmith plugin API 2: see docs/plugins.md, 'Plugin API 2'")
        for alias in (entry.name, *member(entry.obj, "aliases")):
            if alias in self.aliases or (alias != entry.name and alias in self.tasks):
                owner = self.tasks[self.aliases.get(alias, alias)]
                raise PluginError(entry.plugin, f"task name {alias!r} is already registered by "
                                                f"plugin {owner.plugin!r} ({owner.distribution})")
        self._add(self.tasks, entry.name, entry)
        for alias in (entry.name, *member(entry.obj, "aliases")):
            self.aliases[alias] = entry.name

    def add_strategy(self, entry: Entry) -> None:
        self._add(self.strategies, entry.name, entry)

    def default_strategy(self) -> str:
        """The strategy a config without ``strategy.name`` trains with: the first
        registered strategy that declares ``default = True``."""
        for name, entry in self.strategies.items():
            if member(entry.obj, "default"):
                return name
        raise ConfigError([f"strategy.name is not set and no registered strategy is the default "
                           f"(declares default = True); choose one of {', '.join(sorted(self.strategies))}"])

    def add_metric(self, task: str, entry: Entry) -> None:
        self._add(self.metrics, (task, entry.name), entry)

    def add_model_source(self, entry: Entry) -> None:
        self._add(self.model_sources, entry.name, entry)

    def add_data_source(self, entry: Entry) -> None:
        self._add(self.data_sources, entry.name, entry)

    # lookups -------------------------------------------------------------
    def task(self, name: str):
        if name not in self.aliases:
            raise UnknownNameError("task", name, list(self.aliases))
        return self.tasks[self.aliases[name]].obj

    def strategy(self, name: str):
        if name not in self.strategies:
            raise UnknownNameError("strategy", name, list(self.strategies))
        return self.strategies[name].obj

    def metrics_for(self, task_name: str) -> dict[str, str]:
        """Extra metric modules registered for a task: name -> local module path."""
        return {m: e.obj for (t, m), e in self.metrics.items() if t == task_name}

    def model_source_for(self, ref: str):
        for entry in self.model_sources.values():
            if entry.obj.matches(ref):
                return entry.obj
        raise UnknownNameError("model source for", ref, list(self.model_sources))

    def data_source_for(self, spec):
        for entry in self.data_sources.values():
            if entry.obj.matches(spec):
                return entry.obj
        from .data import describe

        raise UnknownNameError("data source for", str(describe(spec)), list(self.data_sources))


def _refuse_near_misses(entry: Entry) -> None:
    """A misspelt optional member would be silently ignored (the core reads the declared
    name): refuse an attribute that is a near-miss of a declared member, naming both."""
    if entry.kind not in ("task", "strategy", "model source", "data source"):
        return
    targets = [(entry.obj, entry.kind, f"{entry.kind} {entry.name!r}")]
    options = getattr(entry.obj, "options", None)
    if isinstance(options, type):
        targets.append((options, "options", f"{entry.kind} {entry.name!r}'s options {options.__name__}"))
    for obj, kind, what in targets:
        miss = near_miss(obj, kind)
        if miss:
            raise PluginError(entry.plugin, f"{what} defines `{miss[0]}`; did you mean `{miss[1]}`?")
