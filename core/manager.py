"""Plugin manager: entry-point discovery, allow/block lists, per-plugin hook calls."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, TunesmithError
from .registry import Entry, Registry

GROUP = "tunesmith"
hookimpl = pluggy.HookimplMarker("tunesmith")


def _split(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    status: str = "loaded"          # loaded | failed | disabled
    error: str | None = None


@dataclass
class Plugins:
    """A plugin manager, what was discovered, and the registry built from it."""

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = build_registry(self)
        return self._registry

    @property
    def failures(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.status == "failed"]

    def info_for(self, plugin_obj) -> PluginInfo:
        name = self.pm.get_name(plugin_obj)
        return self.infos.get(name) or PluginInfo(name, "unknown", "unknown", repr(plugin_obj))

    def call(self, hook_name: str, **kwargs) -> list[Any]:
        """Call each implementation in turn, naming the plugin if one raises."""
        trace = os.environ.get("TUNESMITH_TRACE_PLUGINS") == "1"
        results = []
        for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
            if trace:
                print(f"[tunesmith trace] {hook_name} -> plugin {impl.plugin_name!r}", file=sys.stderr)
            try:
                results.append(impl.function(**{k: kwargs[k] for k in impl.argnames}))
            except TunesmithError:
                raise
            except Exception as exc:  # a plugin bug must name the plugin, not crash deep inside
                raise PluginError(impl.plugin_name, f"raised in hook {hook_name}: "
                                                    f"{type(exc).__name__}: {exc}") from exc
        return results

    def add(self, plugin_obj, name: str, distribution: str = "(local)", version: str = "") -> None:
        """Register an in-process plugin object (used by tests and the Python API)."""
        refused = api_mismatch(plugin_obj)
        if refused:
            raise PluginError(name, refused)
        self.pm.register(plugin_obj, name=name)
        self.infos[name] = PluginInfo(name, distribution, version, getattr(plugin_obj, "__name__", repr(plugin_obj)))
        self._registry = None


def load_plugins(disable: Iterable[str] | None = None, allow: Iterable[str] | None = None,
                 entry_points: Iterable[Any] | None = None) -> Plugins:
    """Discover plugins from the ``tunesmith`` entry-point group.

    :param disable: plugin names to skip (plus ``TUNESMITH_DISABLE_PLUGINS``).
    :param allow: if given (or ``TUNESMITH_PLUGINS``), load only these plugins.
    :param entry_points: override discovery (tests).
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    blocked = set(disable or ()) | _split(os.environ.get("TUNESMITH_DISABLE_PLUGINS"))
    allowed = set(allow or ()) | _split(os.environ.get("TUNESMITH_PLUGINS"))
    plugins = Plugins(pm)
    eps = entry_points if entry_points is not None else metadata.entry_points(group=GROUP)
    for ep in sorted(eps, key=lambda e: e.name):
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, dist.metadata["Name"] if dist else "unknown",
                          dist.version if dist else "unknown", ep.value)
        if ep.name in plugins.infos:   # same plugin name from two distributions
            info.status, info.error = "failed", (f"plugin name {ep.name!r} is also used by "
                                                 f"{plugins.infos[ep.name].distribution!r}")
            plugins.infos[f"{ep.name} ({info.distribution})"] = info
            continue
        plugins.infos[ep.name] = info
        if ep.name in blocked or (allowed and ep.name not in allowed):
            info.status = "disabled"
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # report and keep the others working
            info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
            continue
        refused = api_mismatch(obj)
        if refused:
            info.status, info.error = "failed", refused
            continue
        try:
            pm.register(obj, name=ep.name)
        except Exception as exc:
            info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
    return plugins


def api_mismatch(plugin_obj) -> str | None:
    """Why ``plugin_obj`` cannot load with this tunesmith, or None.

    A plugin may declare the plugin-API versions it was written for as a version
    specifier, ``TUNESMITH_PLUGIN_API = ">=1,<2"``; no declaration means any."""
    spec = getattr(plugin_obj, "TUNESMITH_PLUGIN_API", None)
    if spec is None:
        return None
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from . import PLUGIN_API_VERSION, __version__

    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = f"=={spec}"   # a bare number means exactly that API version
    try:
        wanted = SpecifierSet(spec) if isinstance(spec, str) and spec.strip() else None
    except InvalidSpecifier:
        wanted = None
    if wanted is None:
        return (f"TUNESMITH_PLUGIN_API = {spec!r} is not a version specifier "
                f"(write e.g. '>=1,<2')")
    if str(PLUGIN_API_VERSION) in wanted:
        return None
    return (f"needs tunesmith plugin API {spec}, but tunesmith {__version__} provides plugin API "
            f"{PLUGIN_API_VERSION}; install a tunesmith or a plugin version that match")


def build_registry(plugins: Plugins) -> Registry:
    reg = Registry()
    for hook, kind, add in (("register_tasks", "task", reg.add_task),
                            ("register_strategies", "strategy", reg.add_strategy),
                            ("register_model_sources", "model source", reg.add_model_source)):
        for impl in reversed(getattr(plugins.pm.hook, hook).get_hookimpls()):
            info = plugins.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "unknown", "", "")

            def register(obj, _kind=kind, _add=add, _info=info):
                name = getattr(obj, "name", None)
                if not isinstance(name, str) or not name:
                    raise PluginError(_info.name, f"registered a {_kind} without a string 'name'")
                _add(Entry(_kind, name, obj, _info.name, _info.distribution, _info.version))

            _call_one(impl, hook, register)
    for impl in reversed(plugins.pm.hook.register_metrics.get_hookimpls()):
        info = plugins.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "unknown", "", "")

        def register_metric(task, name, path, _info=info):
            reg.add_metric(task, Entry("metric", name, str(path), _info.name, _info.distribution, _info.version))

        _call_one(impl, "register_metrics", register_metric)
    return reg


def _call_one(impl, hook: str, register) -> None:
    if os.environ.get("TUNESMITH_TRACE_PLUGINS") == "1":
        print(f"[tunesmith trace] {hook} -> plugin {impl.plugin_name!r}", file=sys.stderr)
    try:
        impl.function(register=register)
    except TunesmithError:
        raise
    except Exception as exc:
        raise PluginError(impl.plugin_name, f"raised in hook {hook}: {type(exc).__name__}: {exc}") from exc
