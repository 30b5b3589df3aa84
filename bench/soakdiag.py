"""Run `bastion` with a sampler thread that writes, every few seconds, what the soak needs to attribute RSS growth.

    python -m bench.soakdiag OUT.jsonl EVERY [--light] [--trace] [--leak BYTES_PER_S] -- serve -c bastion.yaml

Each line of OUT.jsonl is one sample: RSS; glibc malloc's own view (`mallinfo2`: bytes in use, free bytes kept in
the arenas, mmapped blocks) and Python's (`sys.getallocatedblocks`, the count of pymalloc arenas); the size of
every `BoundedCache` (by where it was created) and of every large dict, list, set or deque found by the garbage
collector; object counts by type; and with `--trace`, the 25 source lines whose allocations grew most since the
previous sample (`tracemalloc`: it slows the gateway and adds its own memory, so it only attributes: RSS of a
traced run is not the soak's figure). Used by `bench/soak.py --diagnose`.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import sys
import threading
import time
import tracemalloc
import types
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> dict[str, int]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd,
            "top_pad": info.keepcost}


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def _attributes(kind: type) -> list[str]:
    """Attribute names stored in instances without a `__dict__`: `__slots__` and compiled (mypyc) classes."""
    return [name for klass in kind.__mro__ for name, value in vars(klass).items()
            if isinstance(value, types.GetSetDescriptorType | types.MemberDescriptorType) and not name.startswith("__")]


def _holders(objects: list[object], targets: list[object]) -> dict[int, str]:
    """For each target, "HolderType.attribute" of one object that refers to it: one pass over every object."""
    wanted = {id(t) for t in targets}
    found: dict[int, str] = {}
    for holder in objects:
        if isinstance(holder, list) or holder is targets:
            continue
        for ref in gc.get_referents(holder):
            if id(ref) in wanted and id(ref) not in found:
                found[id(ref)] = _attribute_of(holder, ref)
    return found


def _attribute_of(holder: object, ref: object) -> str:
    if isinstance(holder, dict):
        name = next((str(k) for k, v in holder.items() if v is ref), "?")
        return f"dict[{name}]"
    names = [*getattr(holder, "__dict__", {}), *_attributes(type(holder))]
    name = next((n for n in names if getattr(holder, n, None) is ref), "?")
    return f"{type(holder).__name__}.{name}"


def _pymalloc() -> dict[str, int]:
    """pymalloc's own figures (`sys._debugmallocstats`, written to fd 2: captured through a temporary file)."""
    import os
    import tempfile

    wanted = {"# arenas allocated current": "arenas", "# bytes in allocated blocks": "allocated",
              "# bytes in available blocks": "available", "# bytes in partially allocated arenas": "",
              "bytes in unused pools": "unused_pools"}
    with tempfile.TemporaryFile("w+") as tmp:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        out = {}
        for line in tmp:
            name, _, value = line.partition("=")
            for prefix, key in wanted.items():
                if (key and line.lstrip().startswith(prefix.lstrip())) or (key and prefix in name):
                    out[key] = int(value.replace(",", "").split()[0])
    return out


def sample(previous: tracemalloc.Snapshot | None) -> tuple[dict[str, Any], tracemalloc.Snapshot | None]:
    gc.unfreeze()  # the gateway freezes its start-up objects, which hides its tables from gc.get_objects()
    gc.collect()
    objects = gc.get_objects()
    by_type = collections.Counter(type(o).__name__ for o in objects)
    caches: dict[str, int] = {}
    containers: dict[str, int] = {}
    big = [o for o in objects if type(o).__name__ in ("BoundedCache", "TokenCache") or (
        type(o).__name__ in ("dict", "list", "set", "deque", "OrderedDict") and len(o) >= 1000)]  # type: ignore[arg-type]
    holders = _holders(objects, big)
    for obj in big:
        kind = type(obj).__name__
        if kind in ("BoundedCache", "TokenCache"):
            name = f"{holders.get(id(obj), kind)} max={obj.max_entries} ttl={obj.ttl}"  # type: ignore[attr-defined]
            caches[name] = caches.get(name, 0) + len(obj)  # type: ignore[arg-type]
        else:
            name = f"{kind} {holders.get(id(obj), '?')}"
            containers[name] = containers.get(name, 0) + len(obj)  # type: ignore[arg-type]
    del objects, big
    out: dict[str, Any] = {
        "t": time.time(), "rss": _rss(), "malloc": _mallinfo(), "py_blocks": sys.getallocatedblocks(),
        "pymalloc": _pymalloc(), "caches": caches, "containers": containers,
        "types": dict(by_type.most_common(40)),
    }
    snapshot = None
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        out["traced"] = tracemalloc.get_traced_memory()[0]
        if previous is not None:
            out["grew"] = [(str(s.traceback), s.size_diff, s.count_diff)
                           for s in snapshot.compare_to(previous, "traceback")[:25]]
    return out, snapshot


_RUNTIMES: list[Any] = []  # the gateway's `Runtime`, recorded as it is made (see `main`)
_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType, types.FrameType,
         str, bytes, int, float)


def find_tables(root: object, stats: dict[str, int] | None = None, limit: int = 400_000) -> dict[str, Any]:
    """Every `BoundedCache` reachable from `root` (the gateway's Runtime), named by the attribute path that leads
    to it: a bounded walk of the object graph (modules, types and functions are not entered)."""
    found: dict[str, Any] = {}
    seen = {id(root)}
    queue: collections.deque[tuple[object, str]] = collections.deque([(root, "runtime")])
    while queue and len(seen) < limit:
        obj, path = queue.popleft()
        kind = type(obj).__name__
        if kind in ("BoundedCache", "TokenCache"):
            name, n = path.removeprefix("runtime.gateway."), 1
            while f"{name} (max {obj.max_entries})" in found:  # type: ignore[attr-defined]
                n += 1
                name = f"{path.removeprefix('runtime.gateway.')} #{n}"
            found[f"{name} (max {obj.max_entries})"] = obj  # type: ignore[attr-defined]
            continue
        try:  # the gateway runs on: a container may change while it is read (then it is skipped)
            if isinstance(obj, dict):
                children = [(v, f"{path}[{k!r}]" if isinstance(k, str) else path) for k, v in list(obj.items())]
            elif isinstance(obj, list | tuple | set | frozenset | collections.deque):
                children = [(v, path) for v in list(obj)]
            else:
                names = [*getattr(obj, "__dict__", {}), *_attributes(type(obj))]
                children = [(getattr(obj, n, None), f"{path}.{n}") for n in names]
        except (RuntimeError, AttributeError):
            continue
        for child, name in children:
            if child is None or isinstance(child, _SKIP) or id(child) in seen:
                continue
            seen.add(id(child))
            queue.append((child, name))
    if stats is not None:
        stats["visited"] = len(seen)
    return found


def light_sample(tables: dict[str, Any]) -> dict[str, Any]:
    """What the soak records beside RSS, cheap enough for the verdict run: no collection, no object census."""
    return {"t": time.time(), "rss": _rss(), "malloc": _mallinfo(), "py_blocks": sys.getallocatedblocks(),
            "tables": {name: len(table) for name, table in tables.items()},
            "table_bytes": {name: _table_bytes(table) for name, table in tables.items()}}


def _table_bytes(table: Any) -> int:
    """The bytes of a table's hash tables (not its entries): a dict holding N keys under churn grows its table
    to about 3N slots some time after N stops growing (one resize, then never again), a step in RSS."""
    return sum(sys.getsizeof(getattr(table, segment, None) or {}) for segment in ("_probation", "_protected"))


def _leak(per_second: int) -> None:
    """A deliberate leak (`--leak N`: N bytes a second kept forever), to show that the soak's verdict fails."""
    kept = []
    while True:
        time.sleep(0.1)
        kept.append(bytearray(per_second // 10))


def _run_light(path: str, every: float) -> None:
    tables: dict[str, Any] = {}
    walk: dict[str, Any] = {}
    with open(path, "a") as f:
        while True:
            time.sleep(every)
            try:
                if _RUNTIMES and len(tables) < 3:  # the walk, until the compiled config is there
                    started = time.perf_counter()
                    tables = find_tables(_RUNTIMES[0], stats := {})
                    walk = {"tables": len(tables), "seconds": round(time.perf_counter() - started, 3), **stats}
                record = light_sample(tables)
                if walk:
                    record["walk"], walk = walk, {}
            except Exception as exc:  # a diagnostic never stops the gateway
                record = {"t": time.time(), "error": repr(exc)}
            f.write(json.dumps(record) + "\n")
            f.flush()


def _run(path: str, every: float) -> None:
    previous = None
    with open(path, "a") as f:
        while True:
            time.sleep(every)
            try:
                record, previous = sample(previous)
            except Exception as exc:  # a diagnostic never stops the gateway
                record = {"t": time.time(), "error": repr(exc)}
            f.write(json.dumps(record) + "\n")
            f.flush()


def main() -> int:
    args = sys.argv[1:]
    split = args.index("--")
    path, every, *flags = args[:split]
    if "--trace" in flags:
        tracemalloc.start(2)
    from bastion.server import app

    made = app.Runtime.__init__

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        _RUNTIMES.append(self)

    app.Runtime.__init__ = record  # type: ignore[method-assign]
    if "--leak" in flags:
        threading.Thread(target=_leak, args=(int(flags[flags.index("--leak") + 1]),), daemon=True).start()
    run = _run_light if "--light" in flags else _run
    threading.Thread(target=run, args=(path, float(every)), daemon=True, name="soakdiag").start()
    from bastion.cli import main as bastion_main

    return bastion_main(args[split + 1:])


if __name__ == "__main__":
    sys.exit(main())
