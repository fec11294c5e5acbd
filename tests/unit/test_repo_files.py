from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_docker_compose_describes_the_production_topology():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "redis", "web", "worker", "beat", "flower"} <= set(compose["services"])
    assert "redis.conf" in " ".join(compose["services"]["redis"]["command"])
    web = compose["services"]["web"]["environment"]
    assert web["FEEDSITE_SECURE_SSL_REDIRECT"].endswith(":-0}")  # plain HTTP works locally
    flower = compose["services"]["flower"]["command"]
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


def test_compose_builds_one_image_and_waits_for_migrations_and_health():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER feedsite" in dockerfile and "python:3.11-slim" in dockerfile  # slim, non-root
    # Dependencies in a layer of their own, before the source is copied.
    assert dockerfile.index("pip install -r") < dockerfile.index("COPY . .")
    cmd = dockerfile.split("CMD", 1)[1]
    assert "feedsite.serve" in cmd and (ROOT / "feedsite" / "serve.py").exists()
    app = [n for n, s in services.items() if s.get("build") == "."]
    assert {"migrate", "web", "worker", "beat", "flower"} <= set(app)
    for name in app:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        if name != "migrate":
            assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert "pip install -q ." not in str(services[name].get("command")), name
    for name in ("postgres", "web", "worker"):
        assert "healthcheck" in services[name], name
    assert "migrate --noinput" in services["migrate"]["command"]
