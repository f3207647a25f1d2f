"""Plugin manager: entry-point discovery, allow/block lists, hook calls through pluggy."""

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
from .util import split_list

GROUP = "tunesmith"
hookimpl = pluggy.HookimplMarker("tunesmith")


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

    def call(self, hook_name: str, **kwargs) -> list[Any]:
        """Call hook ``hook_name`` through pluggy (every implementation, in pluggy's order),
        naming the plugin if one raises."""
        hook = getattr(self.pm.hook, hook_name)
        try:
            return hook(**kwargs)
        except TunesmithError:
            raise
        except Exception as exc:  # a plugin bug must name the plugin, not crash deep inside
            raise PluginError(_raiser(hook, exc), f"raised in hook {hook_name}: "
                                                  f"{type(exc).__name__}: {exc}") from exc

    def add(self, plugin_obj, name: str, distribution: str = "(local)", version: str = "") -> None:
        """Register an in-process plugin object (used by tests and the Python API)."""
        refused = api_mismatch(plugin_obj)
        if refused:
            raise PluginError(name, refused)
        self.pm.register(plugin_obj, name=name)
        unknown = _unknown_hooks(self.pm, name)
        if unknown:
            self.pm.unregister(name=name)
            raise PluginError(name, unknown)
        self.infos[name] = PluginInfo(name, distribution, version, getattr(plugin_obj, "__name__", repr(plugin_obj)))
        self._registry = None


def _raiser(hook, exc: BaseException) -> str:
    """The plugin whose implementation of ``hook`` the exception came through: pluggy
    re-raises the original exception, whose traceback passes the implementation's frame."""
    owners = {impl.function.__code__: impl.plugin_name for impl in hook.get_hookimpls()
              if hasattr(impl.function, "__code__")}
    tb, name = exc.__traceback__, None
    while tb is not None:
        name = owners.get(tb.tb_frame.f_code, name)
        tb = tb.tb_next
    return name or "unknown"


def _unknown_hooks(pm: pluggy.PluginManager, name: str) -> str | None:
    """Why plugin ``name`` implements a hook tunesmith does not define (a misspelt
    ``register_task``), from ``pm.check_pending()``; None when all its hooks exist."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.get_name(exc.plugin) != name:
            raise
        hooks = sorted(h for h, caller in vars(pm.hook).items()
                       if not h.startswith("_") and not caller.has_spec()
                       and any(i.plugin_name == name for i in caller.get_hookimpls()))
        known = sorted(h for h, caller in vars(pm.hook).items() if not h.startswith("_") and caller.has_spec())
        from .errors import did_you_mean

        return "; ".join(f"implements unknown hook {h!r}{did_you_mean(h, known)} (the hooks are "
                         f"{', '.join(known)})" for h in hooks) or str(exc)
    return None


def _trace(hook_name, hook_impls, kwargs) -> None:
    if os.environ.get("TUNESMITH_TRACE_PLUGINS") == "1":
        for impl in reversed(hook_impls):   # pluggy's call order
            print(f"[tunesmith trace] {hook_name} -> plugin {impl.plugin_name!r}", file=sys.stderr)


def load_plugins(disable: Iterable[str] | None = None, allow: Iterable[str] | None = None,
                 entry_points: Iterable[Any] | None = None) -> Plugins:
    """Discover plugins from the ``tunesmith`` entry-point group.

    :param disable: plugin names to skip (plus ``TUNESMITH_DISABLE_PLUGINS``).
    :param allow: if given (or ``TUNESMITH_PLUGINS``), load only these plugins.
    :param entry_points: override discovery (tests).
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.add_hookcall_monitoring(_trace, lambda *a: None)
    blocked = set(disable or ()) | set(split_list(os.environ.get("TUNESMITH_DISABLE_PLUGINS")))
    allowed = set(allow or ()) | set(split_list(os.environ.get("TUNESMITH_PLUGINS")))
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
            continue
        unknown = _unknown_hooks(pm, ep.name)
        if unknown:   # reported like an import error; the other plugins keep working
            pm.unregister(name=ep.name)
            info.status, info.error = "failed", unknown
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
    """Call the registration hooks through pluggy, one plugin at a time (a subset hook
    caller per plugin), with a ``register`` callback bound to that plugin, so every entry
    records who registered it."""
    reg = Registry()

    def thing(kind, add):
        def bind(info):
            def register(obj):
                name = getattr(obj, "name", None)   # before the contract applies: any object may arrive
                if not isinstance(name, str) or not name:
                    raise PluginError(info.name, f"registered a {kind} without a string 'name'")
                add(Entry(kind, name, obj, info.name, info.distribution, info.version))
            return register
        return bind

    def metric(info):
        def register(task, name, path):
            reg.add_metric(task, Entry("metric", name, str(path), info.name, info.distribution, info.version))
        return register

    for hook, bind in (("register_tasks", thing("task", reg.add_task)),
                       ("register_strategies", thing("strategy", reg.add_strategy)),
                       ("register_model_sources", thing("model source", reg.add_model_source)),
                       ("register_data_sources", thing("data source", reg.add_data_source)),
                       ("register_metrics", metric)):
        impls = getattr(plugins.pm.hook, hook).get_hookimpls()
        plain = [i for i in impls if not (i.wrapper or i.hookwrapper)]   # wrappers wrap every plugin's call
        for impl in reversed(plain):   # pluggy's call order
            info = plugins.infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, "unknown", "", "")
            others = [i.plugin for i in plain if i.plugin_name != impl.plugin_name]
            caller = plugins.pm.subset_hook_caller(hook, remove_plugins=others)
            try:
                caller(register=bind(info))
            except TunesmithError:
                raise
            except Exception as exc:
                raise PluginError(impl.plugin_name, f"raised in hook {hook}: {type(exc).__name__}: {exc}") from exc
    return reg
