"""`moonmind` command line: database, API server and worker."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from moonmind import auth, prune_cli, stack_init
from moonmind.cli_api import default_api
from moonmind.cli_runs import add_parser as add_runs_parser
from moonmind.config import Settings, SettingsError, load_settings
from moonmind.follow import follow_run


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"moonmind: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _check_bind(settings: Settings, host: str) -> None:
    """Refuse a non-loopback address without principals; warn about the embedded default."""
    refusal = auth.bind_refusal(settings, host)
    if refusal is not None:
        print(f"moonmind: {refusal}", file=sys.stderr)
        raise SystemExit(2)
    if not settings.auth_principals:
        print(f"moonmind: {auth.EMBEDDED_WARNING}", file=sys.stderr, flush=True)


def cmd_db_upgrade(_: argparse.Namespace) -> int:
    from api_service.db.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    print(f"database upgraded: {settings.redacted(settings.database_url)}")
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api_service.db.migrate import upgrade
    from api_service.main import create_app

    settings = _settings()
    _check_bind(settings, args.host)
    upgrade(settings.database_url)
    print(
        f"orchestrator API listening on http://{args.host}:{args.port} "
        f"(docs at /docs, database {settings.redacted(settings.database_url)}, "
        f"{args.workers} process{'es' if args.workers > 1 else ''})",
        flush=True,
    )
    # httptools parses HTTP and uvloop runs the event loop: together they about halve the
    # API's own CPU per request against uvicorn's pure-Python defaults (issue 9, P5).
    served = {
        "host": args.host, "port": args.port, "log_level": "warning",
        "loop": "uvloop", "http": "httptools",
    }  # fmt: skip
    if args.workers > 1:  # one process per core: each worker imports the app itself
        uvicorn.run("api_service.main:create_app", factory=True, workers=args.workers, **served)
    else:
        uvicorn.run(create_app(settings), **served)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    from moonmind.workflows.orchestrator.tasks import app

    print(
        f"orchestrator worker consuming queue '{settings.worker_queue}' from "
        f"{settings.redacted(settings.broker_url)} (concurrency {args.concurrency})",
        flush=True,
    )
    argv = [
        "worker",
        "--queues",
        settings.worker_queue,
        "--concurrency",
        str(args.concurrency),
        "--loglevel",
        args.loglevel,
        "--hostname",
        f"orchestrator@{os.uname().nodename}-{os.getpid()}",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """API and worker side by side, stopped together."""
    refusal = auth.bind_refusal(_settings(), args.host)
    if refusal is not None:
        print(f"moonmind: {refusal}", file=sys.stderr)
        return 2
    base = [sys.executable, "-m", "moonmind.cli", "orchestrator"]
    worker = subprocess.Popen([*base, "worker", "--concurrency", str(args.concurrency)])
    api = subprocess.Popen([*base, "api", "--host", args.host, "--port", str(args.port)])
    children = [api, worker]

    def _stop(*_: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        _stop()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
    return max(child.returncode or 0 for child in children)


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a run to a running API, and optionally follow it to the end."""
    body: dict[str, object] = {
        "instruction": args.instruction,
        "target_service": args.service,
        "priority": args.priority,
    }
    if args.patch_file:
        body["patch"] = Path(args.patch_file).read_text()
    if args.requested_by:
        body["requested_by"] = args.requested_by
    if getattr(args, "mode", "fix") == "diagnose":
        body["mode"] = "diagnose"
    if getattr(args, "dry_run", False):
        body["dry_run"] = True
    api = args.api.rstrip("/")
    token = os.environ.get("MOONMIND_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(timeout=60, headers=headers) as client:
        try:
            response = client.post(f"{api}/orchestrator/runs", json=body)
        except httpx.HTTPError as exc:
            print(f"moonmind: cannot reach the API at {api}: {exc}", file=sys.stderr)
            return 2
        if response.status_code != 202:
            error = (
                response.json()
                if response.headers.get("content-type", "").startswith("application/json")
                else {"error": response.text}
            )
            print(f"moonmind: {error.get('error')}: {error.get('detail', '')}", file=sys.stderr)
            if error.get("remediation"):
                print(f"moonmind: {error['remediation']}", file=sys.stderr)
            return 2
        run_id = response.json()["run_id"]
        print(f"run {run_id} queued ({api}/orchestrator/runs/{run_id})", flush=True)
        if not args.follow:
            return 0
        status = follow_run(client, api, run_id, show_logs=args.logs)
    return 0 if status == "succeeded" else 1


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Queue a diagnosis-only run (nothing is changed) and print what it found."""
    args.instruction = f"diagnose {args.service}"
    args.mode, args.follow, args.patch_file, args.requested_by = "diagnose", True, None, None
    return cmd_submit(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moonmind", description=__doc__)
    sub = parser.add_subparsers(dest="group", required=True)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="cmd", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    orch = sub.add_parser("orchestrator", help="run the orchestrator").add_subparsers(
        dest="cmd", required=True
    )
    for name, func, help_text in (
        ("api", cmd_api, "serve the HTTP API"),
        ("up", cmd_up, "API and worker together"),
    ):
        p = orch.add_parser(name, help=help_text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        if name == "api":
            p.add_argument(
                "--workers",
                type=_positive,
                default=os.environ.get("MOONMIND_API_WORKERS") or "1",  # parsed as given
                help="API processes (env MOONMIND_API_WORKERS; e.g. one per core)",
            )
        if name == "up":
            p.add_argument("--concurrency", type=int, default=1)
        p.set_defaults(func=func)
    submit = orch.add_parser("submit", help="ask a running API to fix a service")
    submit.add_argument("instruction", help='what is wrong, e.g. "fix the missing dependency"')
    submit.add_argument("--service", required=True, help="compose service to repair")
    submit.add_argument("--api", default=default_api(), help="API base URL (env MOONMIND_API)")
    submit.add_argument("--priority", choices=("normal", "high"), default="normal")
    submit.add_argument("--patch-file", help="a unified diff to apply instead of deriving one")
    submit.add_argument(
        "--requested-by", help="who asks; must be MOONMIND_TOKEN's principal (the default)"
    )
    submit.add_argument("--follow", action="store_true", help="print progress until it ends")
    submit.add_argument("--dry-run", action="store_true", help="derive the diff; change nothing")
    submit.add_argument("--logs", action="store_true", help="with --follow: log lines too")
    submit.set_defaults(func=cmd_submit)

    diagnose = orch.add_parser("diagnose", help="explain why a service fails; change nothing")
    diagnose.add_argument("service", help="compose service to diagnose")
    diagnose.add_argument("--api", default=default_api(), help="API base URL (env MOONMIND_API)")
    diagnose.add_argument("--priority", choices=("normal", "high"), default="normal")
    diagnose.add_argument("--logs", action="store_true", help="print log lines too")
    diagnose.set_defaults(func=cmd_diagnose)

    worker = orch.add_parser("worker", help="consume the orchestrator queue")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)
    prune_cli.add_parser(orch)
    auth.add_parser(sub)
    add_runs_parser(sub)
    stack_init.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
