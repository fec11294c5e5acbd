"""The arrows point one way (README, "Modules"): read from the source, every import counted,
including those inside functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGES = ("activities", "follows", "feeds", "feedsite")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``name`` imports (a name imported from a package counts as the module of
    that name when there is one, else the package)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from . import a, b` imports the modules a and b; `from .m import f`, the module m.
            targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            targets = targets or [base]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_walk_sees_imports_inside_functions_and_finds_cycles():
    graph = _graph()
    assert "feeds.store" in graph["feeds.services"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _parents(module: str) -> list[str]:
    """The packages Python imports before ``module`` ("a.b.c": "a", "a.b")."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _reach(graph: dict[str, set[str]], start: str) -> dict[str, str | None]:
    """Every project module importing ``start`` loads, with the module that imported it (a
    module's packages count: importing a.b.c runs a/__init__ and a/b/__init__)."""
    seen: dict[str, str | None] = {start: None}
    todo = [start]
    while todo:
        module = todo.pop()
        for target in sorted(graph[module] | {p for p in _parents(module) if p in graph}):
            if target not in seen:
                seen[target] = module
                todo.append(target)
    return seen


def _chain(seen: dict[str, str | None], module: str) -> str:
    path = [module]
    while seen[path[-1]] is not None:
        path.append(seen[path[-1]])  # type: ignore[arg-type]
    return " <- ".join(path)


def test_activities_and_follows_know_nothing_of_feeds():
    """Not directly, and not through what they import (feedsite.api: the shared plumbing sits
    below the apps, the wiring above them)."""
    graph = _graph()
    wrong = []
    for module in graph:
        if module.split(".")[0] not in ("activities", "follows"):
            continue
        seen = _reach(graph, module)
        wrong += [_chain(seen, m) for m in sorted(seen) if m.split(".")[0] == "feeds"]
    assert wrong == []


def test_the_transitive_walk_sees_an_import_through_a_third_module():
    graph = {"app.views": {"api.throttles"}, "api.throttles": {"feeds.store"}, "feeds.store": set()}
    graph |= {"app": set(), "api": set(), "feeds": set()}
    seen = _reach(graph, "app.views")
    assert _chain(seen, "feeds.store") == "feeds.store <- api.throttles <- app.views"


# What talks to Redis: a Redis client library, Django's cache (django-redis behind it), or a raw
# protocol encoder.
REDIS_LIBRARIES = ("redis", "django_redis", "hiredis", "django.core.cache")
# Calls that reach a raw client or send a command, whatever the receiver: the store's client
# getter, pipelines and scripts, and redis-py's command methods whose names nothing else in the
# project uses (get, set, delete, exists, keys, rename are left out: dicts, the ORM and paths
# have them, as have SQL cursors' execute and paths' unlink; a raw client cannot be had without
# client() anyway, and a pipeline's execute follows its pipeline()).
RAW_ACCESS = {
    "client", "async_client", "_client", "get_redis_connection", "from_url", "connection_pool"
}  # fmt: skip
REDIS_CALLS = {
    "pipeline", "execute_command", "evalsha", "eval", "fcall", "script_load",
    "register_script", "scan_iter", "mget", "mset", "setex", "setnx", "getdel", "incr",
    "incrby", "decr", "decrby", "expire", "pexpire", "expireat", "ttl", "pttl", "persist",
    "zadd", "zrem", "zcard", "zscore", "zrank", "zrange", "zrevrange", "zrangebylex",
    "zrevrangebylex", "zrangebyscore", "zrevrangebyscore", "zremrangebyrank",
    "zremrangebyscore", "zremrangebylex", "zincrby", "zmscore", "sadd", "srem", "smembers",
    "sismember", "scard", "hset", "hget", "hgetall", "hdel", "hincrby", "hmget", "lpush",
    "rpush", "lrange", "ltrim", "xadd", "xread", "xrange", "publish", "subscribe",
    "psubscribe", "memory_usage", "flushdb", "flushall", "ping",
}  # fmt: skip
# Attributes that hold a client (``http.client`` is a module: a plain ``.client`` is not one).
PRIVATE_CLIENTS = {"_client", "async_client"}
# A string that starts like one of our keys (the default prefix "fs", or a test's "fstest").
KEY_LITERAL = re.compile(r"^fs[a-z]*:")
# Names that build a key: the prefix every key starts with, and the store's key-head helpers.
KEY_PARTS = {"FEEDSITE_KEY_PREFIX", "prefix", "timeline_key_head", "body_prefix"}
# Modules outside feeds/store/ allowed to talk to Redis, each with why. Empty for the app code;
# the launchers of local redis-server processes speak the protocol to set the servers up.
TALKERS_ALLOWED = {
    # Starts redis-server processes for tests and `make run`; checks one answers (PING).
    "feedsite.embedded": "server process launcher",
    # Forms a local Redis Cluster (CLUSTER ADDSLOTS, MEET, SET-CONFIG-EPOCH): no key of ours.
    "feedsite.devcluster": "server process launcher",
}


def _call_name(node: ast.Call) -> tuple[str | None, str]:
    """(the receiver's name when it is a plain name, the called name) of a call."""
    func = node.func
    if isinstance(func, ast.Attribute):
        owner = func.value.id if isinstance(func.value, ast.Name) else None
        return owner, func.attr
    if isinstance(func, ast.Name):
        return None, func.id
    return None, ""


def redis_talk(tree: ast.AST) -> list[str]:
    """What in ``tree`` talks to Redis or builds a key: a Redis library imported, a raw client
    taken, a command method called, the key prefix read. Calls of the store's own functions
    (``store.feed_ids(...)``) are the store's business, except store.client()."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
                names += [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if any(name == lib or name.startswith(lib + ".") for lib in REDIS_LIBRARIES):
                    found.append(f"line {node.lineno}: imports {name}")
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if isinstance(node, ast.ImportFrom) and (
                module.endswith("store") or ".store." in f".{module}."
            ):
                if module.split(".")[-1] == "connection":
                    found.append(f"line {node.lineno}: imports the store's connection module")
                for alias in node.names:
                    if alias.name in RAW_ACCESS | KEY_PARTS:
                        found.append(f"line {node.lineno}: imports store.{alias.name}")
        elif isinstance(node, ast.Call):
            owner, name = _call_name(node)
            if name in RAW_ACCESS or name in KEY_PARTS:
                found.append(f"line {node.lineno}: calls {owner or ''}.{name}()")
            elif name in REDIS_CALLS and owner != "store":
                found.append(f"line {node.lineno}: calls .{name}()")
        elif isinstance(node, ast.Attribute) and node.attr in KEY_PARTS | PRIVATE_CLIENTS:
            found.append(f"line {node.lineno}: reads .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if KEY_LITERAL.match(node.value):
                found.append(f"line {node.lineno}: a key literal {node.value[:20]!r}")
    return found


# Single findings allowed in a module, each with why.
FINDINGS_ALLOWED = {
    # The stream gateway holds its process's async client (store.async_client) and hands it
    # to store functions (LiveSubscription, stream_register, body_get_async); it sends nothing.
    "feeds.stream": ("calls store.async_client()", "reads .async_client"),
}


def test_only_the_store_talks_to_redis_or_builds_a_key():
    """README: "feeds/store/ is the only code that builds a key or sends a command"."""
    talkers = {}
    for name, path in _modules().items():
        if name == "feeds.store" or name.startswith("feeds.store.") or name in TALKERS_ALLOWED:
            continue
        allowed = FINDINGS_ALLOWED.get(name, ())
        found = [
            f
            for f in redis_talk(ast.parse(path.read_text()))
            if not any(f.endswith(a) for a in allowed)
        ]
        if found:
            talkers[name] = found
    assert talkers == {}


def test_the_redis_scan_finds_commands_clients_and_keys():
    talking = [
        "import redis",
        "from django.core.cache import cache",
        "from feeds.store import client",
        "store.client().exists(store.feed_key(1))",
        "r.pipeline(transaction=False)",
        "conn.zadd(key, {m: 0})",
        "conn.execute_command('ZCARD', key)",
        "f'{store.prefix()}:feed:{uid}'",
        "settings.FEEDSITE_KEY_PREFIX + ':x'",
        "from feeds.store.connection import client as c\nc().get('k')",
        "from feeds.store.connection import round_trip",
        "from .store.connection import client",
        "sc._client.set('k', 1)",
        "store.async_client()",
        "key = 'fs:home:{s1}:1'",
    ]
    for source in talking:
        assert redis_talk(ast.parse(source)), source
    quiet = [
        "store.feed_ids(1)",
        "store.hit_window('login', ident, 60)",
        "store.ping()",
        "d.get('x'); qs.exists(); Path('p').rename('q')",
        "from feeds import store",
        "http.client.HTTPConnection('h', 80)",
    ]
    for source in quiet:
        assert redis_talk(ast.parse(source)) == [], source


def test_settings_are_the_only_reader_of_the_environment():
    # The launchers (make run, the serving layout, embedded services) start processes before
    # Django is configured and hand their environment on; the WSGI/ASGI/Celery entry points
    # only default DJANGO_SETTINGS_MODULE (and wsgi drops the process environment from requests).
    launchers = {
        "feedsite.settings",
        "feedsite.devrun",
        "feedsite.serve",
        "feedsite.streamserve",
        "feedsite.embedded",
        "feedsite.devcluster",
        "feedsite.wsgi",
        "feedsite.asgi",
        "feedsite.celery",
    }
    readers = {
        name
        for name, path in _modules().items()
        if "os.environ" in path.read_text() or "getenv" in path.read_text()
    }
    assert readers - launchers == set()
