"""The environment a model needs: captured when the bundle is written, checked before it is loaded.

Capture reads the pickle itself, not the notebook's imports: every module the pickle references
(``GLOBAL``/``STACK_GLOBAL`` opcodes, and the modules cloudpickle re-imports with ``subimport``) is
mapped to its installed distribution, pinned to the installed version, together with the closure of
that distribution's requirements (markers evaluated for this interpreter, extras skipped). The
standard library is never pinned.

Code that no distribution provides (a class defined in the notebook's ``__main__``, a helper ``.py``
next to it) cannot be installed where the model runs, so :func:`dumps` pickles it by value and the
manifest lists it under ``by_value``. Limits: a by-value module travels as its objects, not as a file,
so data files it reads at import time do not travel; C extensions outside a distribution cannot travel
at all.

Check compares python ``major.minor`` (pickles of code objects do not cross minor versions) and every
pin, and lists every difference at once.
"""
from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import pickle
import pickletools
import platform
import subprocess
import sys
import sysconfig
from types import ModuleType
from typing import Any, Iterable, Mapping, Sequence

import cloudpickle
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from gazelle import pickling
from gazelle.errors import BadRequest, BundleError, ConfigError, EnvironmentMismatch

PROTOCOL = min(5, pickle.HIGHEST_PROTOCOL)
CHECK_MODES = ("strict", "warn")
_MAX_PASSES = 8  # by-value modules may reference further local modules; each pass finds one level

_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                         "STRING", "BINSTRING", "SHORT_BINSTRING"})
_MEMO_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_SILENT_OPS = frozenset({"MEMOIZE", "FRAME", "PROTO", "STOP"}) | _MEMO_PUT_OPS
_SUBIMPORT = {("cloudpickle.cloudpickle", "subimport"), ("cloudpickle.cloudpickle_fast", "subimport")}


# -- what a pickle references --


def pickle_modules(pickled: bytes) -> tuple[set[str], set[str]]:
    """``(referenced, defined)``: modules the pickle imports at load time, and the ``__module__`` of
    the classes and functions cloudpickle stored by value in it."""
    referenced: set[str] = set()
    defined: set[str] = set()
    try:
        _walk(pickletools.genops(pickled), referenced, defined)
    except ValueError as exc:
        raise BundleError(f"the model's pickle cannot be read ({exc})") from None
    return referenced, defined


def _walk(ops: Iterable[tuple[Any, Any, Any]], referenced: set[str], defined: set[str]) -> None:
    memo: dict[int, Any] = {}
    pushed: list[Any] = [None, None]  # the last two values pushed: the operands of STACK_GLOBAL
    want: str | None = None  # "subimport" or "module": what the next pushed string means
    for op, arg, _ in ops:
        name = op.name
        if name in _SILENT_OPS:
            if name == "MEMOIZE":
                memo[len(memo)] = pushed[-1]
            elif name in _MEMO_PUT_OPS:
                memo[int(arg)] = pushed[-1]
            continue
        value: Any = None
        if name in _STRING_OPS:
            value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
        elif name in _MEMO_GET_OPS:
            value = memo.get(int(arg))
        elif name == "GLOBAL":
            module, _, qualname = str(arg).partition(" ")
            referenced.add(module)
            want = "subimport" if (module, qualname) in _SUBIMPORT else None
        elif name == "STACK_GLOBAL":
            module, qualname = pushed[-2], pushed[-1]
            if isinstance(module, str):
                referenced.add(module)
            want = "subimport" if (module, qualname) in _SUBIMPORT else None
        if isinstance(value, str):
            if want == "subimport":
                referenced.add(value)
                want = None
            elif want == "module":
                defined.add(value)
                want = None
            elif value == "__module__":
                want = "module"
        elif name not in ("GLOBAL", "STACK_GLOBAL"):
            want = None  # the operand we waited for was not a string after all
        pushed = [pushed[-1], value]


def _top(module: str) -> str:
    return module.partition(".")[0]


def _is_stdlib(module: str) -> bool:
    return _top(module) in sys.stdlib_module_names


def _distributions_of(modules: Iterable[str], owners: Mapping[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for module in modules:
        for dist in owners.get(_top(module), ()):
            found.add(dist)
    return found


_OWNERS: tuple[Any, Mapping[str, list[str]]] | None = None


def _owners() -> Mapping[str, list[str]]:
    """Top-level module -> distributions providing it. Scanning every installed distribution takes a
    fifth of a second, so the answer is kept until a directory on sys.path changes (a ``pip install``
    in the notebook touches site-packages)."""
    global _OWNERS
    stamp = tuple((p, _mtime(p)) for p in sys.path)
    if _OWNERS is None or _OWNERS[0] != stamp:
        _OWNERS = (stamp, metadata.packages_distributions())
    return _OWNERS[1]


def _mtime(path: str) -> int:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return 0


def _is_local(module: str, owners: Mapping[str, list[str]]) -> bool:
    """Not the stdlib and not in any installed distribution: it can only travel by value."""
    return module == "__main__" or (not _is_stdlib(module) and _top(module) not in owners)


# -- pickling --


def dumps(model: Any, protocol: int = PROTOCOL) -> tuple[bytes, list[str]]:
    """Pickle ``model`` with cloudpickle, local modules by value, the same bytes in every process
    (:mod:`gazelle.pickling`). Returns the bytes and the names of the modules that travel by value.

    A first pass pickles by reference; the local modules it references are registered with
    ``cloudpickle.register_pickle_by_value`` and the model pickled again, until none is left.
    The registrations are undone afterwards, so the caller's cloudpickle settings are unchanged.
    """
    owners = _owners()
    registered: list[ModuleType] = []
    try:
        pickled = pickling.dumps(model, protocol)
        for _ in range(_MAX_PASSES):
            referenced, _ = pickle_modules(pickled)
            local = sorted(m for m in referenced if _is_local(m, owners) and m in sys.modules)
            if not local:
                break
            for name in local:
                cloudpickle.register_pickle_by_value(sys.modules[name])
                registered.append(sys.modules[name])
            pickled = pickling.dumps(model, protocol)
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)
    return pickled, _by_value(model, pickled, owners)


def _by_value(model: Any, pickled: bytes, owners: Mapping[str, list[str]]) -> list[str]:
    referenced, defined = pickle_modules(pickled)
    # A local module still referenced by name would fail to import where the model runs; it is
    # listed too, so that the manifest says what the model depends on outside any distribution.
    candidates = defined | {m for m in referenced if _is_local(m, owners)}
    own = getattr(model, "__module__", None) or getattr(type(model), "__module__", None)
    if isinstance(own, str):
        candidates.add(own)
    return sorted(m for m in candidates if _is_local(m, owners))


# -- capture --


def capture(model: Any, pickled: bytes, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The environment ``pickled`` needs: ``{"python", "platform", "requirements", "by_value"}``.

    ``requirements`` are sorted exact pins with their closure; ``extra`` pins (requirement strings)
    are added and win over captured ones for the same distribution.
    """
    owners = _owners()
    referenced, _ = pickle_modules(pickled)
    roots = _distributions_of((m for m in referenced if not _is_stdlib(m)), owners)
    pins: dict[str, str] = {canonicalize_name(name): f"{canonicalize_name(name)}=={version}"
            for name, version in _closure(roots).items()}
    user: dict[str, str] = {}
    for text in extra:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise BadRequest(f"requirement {text!r} is not valid: {exc}") from None
        user[canonicalize_name(req.name)] = str(req)
        installed = _installed_version(req.name)
        if installed is not None and req.specifier.contains(installed, prereleases=True):
            for name, version in _closure([req.name]).items():
                pins.setdefault(canonicalize_name(name), f"{canonicalize_name(name)}=={version}")
    pins.update(user)
    return {
        "python": platform.python_version(),
        "platform": sysconfig.get_platform(),
        "requirements": [pins[name] for name in sorted(pins)],
        "by_value": _by_value(model, pickled, owners),
    }


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _closure(roots: Iterable[str]) -> dict[str, str]:
    """Installed distributions ``roots`` and everything they require here, name -> version."""
    found: dict[str, str] = {}
    todo = list(roots)
    environment = {"extra": ""}
    while todo:
        name = todo.pop()
        key = canonicalize_name(name)
        if key in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # required but not installed here: nothing to pin it to
        found[key] = dist.version
        for text in dist.requires or ():
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not req.marker.evaluate(environment):
                continue
            todo.append(req.name)
    return found


# -- check --


def differences(manifest: Mapping[str, Any]) -> list[str]:
    """Every way this interpreter's environment differs from the bundle's, one sentence each."""
    names = [_requirement(text).name for text in manifest.get("requirements") or ()]
    return _compare(manifest, _python_minor(platform.python_version()),
                    {n: _installed_version(n) for n in names})


def check(manifest: Mapping[str, Any], mode: str = "strict") -> list[str]:
    """Compare with the bundle's environment. ``strict`` raises :class:`EnvironmentMismatch` listing
    every difference; ``warn`` returns them."""
    if mode not in CHECK_MODES:
        raise ConfigError(f"environment check mode {mode!r} is not one of {', '.join(CHECK_MODES)}")
    found = differences(manifest)
    if found and mode == "strict":
        raise EnvironmentMismatch(found)
    return found


_PROBE = """
import importlib.metadata as m, json, platform, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = m.version(name)
    except m.PackageNotFoundError:
        out[name] = None
print(json.dumps({"python": platform.python_version(), "versions": out}))
"""


def satisfied_by(python_exe: str, manifest: Mapping[str, Any]) -> bool:
    """Whether the interpreter ``python_exe`` has the bundle's python minor and every pin (runs it)."""
    names = [_requirement(text).name for text in manifest.get("requirements") or ()]
    try:
        done = subprocess.run([python_exe, "-I", "-c", _PROBE, *names], capture_output=True,
                              text=True, timeout=60, check=True)
        probe = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return False
    return not _compare(manifest, _python_minor(probe["python"]), probe["versions"])


def _compare(manifest: Mapping[str, Any], python_minor: str,
             installed: Mapping[str, str | None]) -> list[str]:
    found = []
    wanted = str(manifest.get("python") or "")
    if _python_minor(wanted) != python_minor:
        found.append(f"python: bundle has {wanted or 'no version'}, this is {python_minor} "
                     f"(bundles load only on the same python major.minor)")
    for text in manifest.get("requirements") or ():
        req = _requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # a pin for another platform or interpreter
        have = installed.get(req.name)
        spec = str(req.specifier)
        want = spec[2:] if spec.startswith("==") and "," not in spec else spec or "any version"
        if have is None:
            found.append(f"{req.name}: bundle has {want}, not installed")
        elif req.specifier and not req.specifier.contains(have, prereleases=True):
            found.append(f"{req.name}: bundle has {want}, installed {have}")
    return found


def _requirement(text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise BadRequest(f"the bundle's requirement {text!r} is not valid: {exc}") from None


def _python_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])

