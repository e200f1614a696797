"""`moonmind runs ...`: list, show, follow, approve, retry, cancel runs and fetch artifacts.

Every command talks to a running API (``--api`` or ``MOONMIND_API``) with the bearer
token in ``MOONMIND_TOKEN``; ``--json`` prints the API's JSON for scripts. The exit
codes are listed in :mod:`moonmind.cli_api`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import httpx

from moonmind import cli_show
from moonmind.cli_api import (
    NOT_FOUND,
    OK,
    RUN_NOT_SUCCEEDED,
    UNREACHABLE,
    USAGE,
    Api,
    CliError,
    default_api,
    ended_badly,
)
from moonmind.cli_format import Painter, colour_enabled, runs_table, terminal_width
from moonmind.follow import READ_TIMEOUT_S, follow_run, iter_events
from moonmind.workflows.orchestrator.enums import RunStatus

STATUSES = tuple(status.value for status in RunStatus)
RETRY_STEPS = ("patch", "build", "restart", "verify", "rollback")
# How long `runs logs` without --follow waits for more after the replay of what exists.
SNAPSHOT_IDLE_S = 2.0


EPILOG = """Runs on a running API (--api or MOONMIND_API; token in MOONMIND_TOKEN).

exit codes: 0 ok; 1 the run ended failed, rolled_back or cancelled (show, logs);
2 usage or invalid request; 3 authentication or permission refused (401/403);
4 run or artifact not found; 5 API unreachable or server error; 6 not allowed in
the run's current state (409)."""


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), flush=True)


def _paint() -> Painter:
    return Painter(colour_enabled())


def _status_code(status: str) -> int:
    return RUN_NOT_SUCCEEDED if ended_badly(status) else OK


def cmd_list(args: argparse.Namespace, api: Api) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.service:
        params["service"] = args.service
    page = api.json("GET", "/orchestrator/runs", params=params)
    if args.json:
        _print_json(page)
        return OK
    if not page["runs"]:
        print("no runs")
        return OK
    for line in runs_table(page["runs"], terminal_width(), _paint()):
        print(line)
    return OK


def cmd_show(args: argparse.Namespace, api: Api) -> int:
    detail = api.run(args.run_id)
    if args.json:
        _print_json(detail)
    else:
        for line in cli_show.render(api, detail, _paint()):
            print(line)
    return _status_code(detail["status"])


def cmd_logs(args: argparse.Namespace, api: Api) -> int:
    """Step transitions and log lines; without --follow, what exists so far."""
    detail = api.run(args.run_id)  # 401/403/404 answered here, not inside the stream
    idle = None if args.follow else SNAPSHOT_IDLE_S
    status = "unknown"
    try:
        if args.json:
            for kind, data in iter_events(api.client, api.base, args.run_id, idle_timeout=idle):
                print(json.dumps({"event": kind, "data": data}, sort_keys=True), flush=True)
                status = str(data["status"]) if kind == "status" else status
        else:
            status = follow_run(
                api.client, api.base, args.run_id, show_logs=True, idle_timeout=idle
            )
    except httpx.ReadTimeout:
        if args.follow:
            raise CliError(UNREACHABLE, f"the API at {api.base} stopped answering") from None
        if not args.json:
            print(f"(run is {detail['status']}; --follow to keep watching)", flush=True)
    except httpx.HTTPError as exc:
        raise CliError(UNREACHABLE, f"lost the API at {api.base}: {exc}") from None
    return _status_code(status)


_ROLES = re.compile(r"by one of: (.+?) \(POST")


def _approval_body(args: argparse.Namespace, api: Api) -> dict[str, Any]:
    principal = args.as_principal or os.environ.get("MOONMIND_PRINCIPAL")
    if not principal:
        raise CliError(
            USAGE,
            "who approves? an approval names the bearer token's principal",
            "pass --as YOUR_PRINCIPAL_ID (or set MOONMIND_PRINCIPAL)",
        )
    detail = api.run(args.run_id)
    role = args.role
    if role is None:  # the first role the waiting run's message names
        found = _ROLES.search(detail.get("message") or "")
        role = found.group(1).split(",")[0].strip() if found else "approver"
    body: dict[str, Any] = {"approver": {"id": principal, "role": role}, "token": args.ticket}
    diff = args.diff_sha256
    if diff is None and detail.get("approval_requirement") == "pre-verify":
        diff_artifact = cli_show.artifact_of(detail, "patch_diff")
        diff = diff_artifact["checksum"] if diff_artifact else None
    if diff is not None:
        body["diff_sha256"] = diff
    return body


def cmd_approve(args: argparse.Namespace, api: Api) -> int:
    body = _approval_body(args, api)
    summary = api.json("POST", f"/orchestrator/runs/{args.run_id}/approvals", json=body)
    if args.json:
        _print_json(summary)
        return OK
    what = f"diff {body['diff_sha256']}" if body.get("diff_sha256") else "the run"
    print(f"approved {what} as {body['approver']['id']} ({body['approver']['role']})")
    print(f"run {summary['run_id']}: {_paint().status(summary['status'])}")
    return OK


def _post_action(args: argparse.Namespace, api: Api, action: str, body: Any) -> int:
    summary = api.json("POST", f"/orchestrator/runs/{args.run_id}/{action}", json=body)
    if args.json:
        _print_json(summary)
        return OK
    note = f" — {summary['message']}" if summary.get("message") else ""
    print(f"run {summary['run_id']}: {_paint().status(summary['status'])}{note}")
    return OK


def cmd_retry(args: argparse.Namespace, api: Api) -> int:
    body = {"resume_from_step": args.from_step, "reason": args.reason}
    return _post_action(args, api, "retry", {k: v for k, v in body.items() if v is not None})


def cmd_cancel(args: argparse.Namespace, api: Api) -> int:
    return _post_action(args, api, "cancel", None)


def _download(args: argparse.Namespace, api: Api, artifacts: list[dict[str, Any]]) -> int:
    name = args.download
    match = [a for a in artifacts if name in (a["path"], str(a["artifact_id"]))]
    if not match:
        raise CliError(
            NOT_FOUND,
            f"run {args.run_id} has no artifact {name!r}",
            f"one of: {', '.join(a['path'] for a in artifacts) or '(none)'}",
        )
    artifact = match[-1]
    response = api.download(args.run_id, str(artifact["artifact_id"]))
    data = response.content
    digest = hashlib.sha256(data).hexdigest()
    if digest != response.headers.get("x-checksum-sha256", digest):
        raise CliError(UNREACHABLE, f"{name}: the bytes received hash to {digest}, not the API's")
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return OK
    target = Path(args.output or Path(artifact["path"]).name)
    if target.is_dir():
        target = target / Path(artifact["path"]).name
    target.write_bytes(data)
    saved = {"path": str(target), "bytes": len(data), "sha256": digest}
    if args.json:
        _print_json(saved)
    else:
        print(f"saved {artifact['path']} to {target} ({len(data)} bytes, sha256 {digest})")
    return OK


def cmd_artifacts(args: argparse.Namespace, api: Api) -> int:
    artifacts = api.artifacts(args.run_id)
    if args.download:
        return _download(args, api, artifacts)
    if args.json:
        _print_json({"artifacts": artifacts})
        return OK
    width = max([len("NAME"), *(len(a["path"]) for a in artifacts)])
    print(f"{'NAME'.ljust(width)}  {'TYPE':<12}  {'BYTES':>9}  SHA256")
    for a in artifacts:
        line = f"{a['path'].ljust(width)}  {a['type']:<12}  {a['size_bytes']:>9}  {a['checksum']}"
        print(line[: terminal_width()])
    return OK


def _run(args: argparse.Namespace) -> int:
    read_timeout = READ_TIMEOUT_S if getattr(args, "follow", False) else 60.0
    try:
        with Api(args.api, read_timeout=read_timeout) as api:
            return int(args.runs_func(args, api))
    except CliError as exc:
        return exc.report()


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 1 and 100")
    return value


def _common(p: argparse.ArgumentParser, *, run_id: bool = True) -> None:
    if run_id:
        p.add_argument("run_id", metavar="ID", help="the run's id")
    p.add_argument("--api", default=default_api(), help="API base URL (env MOONMIND_API)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_parser(sub: Any) -> None:
    """`moonmind runs` and its commands, on the top-level subparsers."""
    runs = sub.add_parser(
        "runs",
        help="list, inspect and act on runs",
        description=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="cmd", required=True)

    def command(name: str, func: Any, help_text: str, **kw: bool) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = runs.add_parser(name, help=help_text)
        _common(p, **kw)
        p.set_defaults(func=_run, runs_func=func)
        return p

    p = command("list", cmd_list, "runs, newest first", run_id=False)
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--service", help="only this compose service's runs")
    p.add_argument("--limit", type=_limit, default=20, help="at most this many (1-100)")
    command("show", cmd_show, "a run's steps, verify outcome and diff")
    p = command("logs", cmd_logs, "a run's step transitions and log lines")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until it ends")
    p = command("approve", cmd_approve, "approve a protected service's run")
    p.add_argument("--as", dest="as_principal", help="your principal id (env MOONMIND_PRINCIPAL)")
    p.add_argument("--role", help="the role you approve in (default: the gate's first role)")
    p.add_argument("--ticket", default="moonmind-cli", help="change ticket (kept as sha256)")
    p.add_argument("--diff-sha256", help="the diff you approve (default: the run's patch.diff)")
    p = command("retry", cmd_retry, "replay a failed or rolled-back run")
    p.add_argument("--from", dest="from_step", choices=RETRY_STEPS, help="resume at this step")
    p.add_argument("--reason", help="why (kept in the run's audit)")
    command("cancel", cmd_cancel, "cancel a run (rolls back what it changed)")
    p = command("artifacts", cmd_artifacts, "a run's artifacts, or download one")
    p.add_argument("--download", metavar="NAME", help="artifact path (e.g. patch.diff) or id")
    p.add_argument("--output", "-o", metavar="PATH", help="file or folder to write; - for stdout")
