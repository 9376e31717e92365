"""The ``courier`` command: api, worker, simulate, submit, conversation, usage, dev, keys,
clients, budgets (docs/contract.md, Commands)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from pydantic import ValidationError

from config.celery import ALL_QUEUES
from config.production import (
    api_keys_problem,
    production_problems,
    signing_keys_problem,
    unsafe_message,
)
from config.settings import Settings
from producers.api.apikeys import ManagedKeys
from producers.budgets_cli import budgets_cli
from producers.cli_api import api
from producers.cli_clients import clients_cli, configured_redis
from producers.cli_conversation import conversation
from producers.cli_http import ApiKey, ApiUrl, api_call
from producers.fair_cli import fair

cli = typer.Typer(
    name="courier",
    help="Courier: long AI jobs on Celery + Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
keys_cli = typer.Typer(
    help="Managed API keys (stored in Redis as SHA-256 digests) and webhook secrets.",
    no_args_is_help=True,
)
cli.add_typer(keys_cli, name="keys")
cli.add_typer(clients_cli, name="clients")
cli.add_typer(budgets_cli, name="budgets")
cli.command("api")(api)
cli.command("conversation")(conversation)
cli.command("fair")(fair)


def _managed_keys() -> ManagedKeys:
    return ManagedKeys(configured_redis())


def checked_settings(serves_api: bool) -> Settings:
    """The settings, or exit 2 naming every problem: invalid values, or (with
    COURIER_PROFILE=production) every unsafe one, API keys included for the API."""
    problems: list[str] = []
    try:
        settings = Settings()
    except ValidationError as exc:
        try:  # was it the production profile? list its problems with the API key check
            settings = Settings(profile="development")
        except ValidationError:
            typer.echo(f"courier: invalid configuration:\n{exc}", err=True)
            raise typer.Exit(2) from None
        problems = production_problems(settings)
        settings = settings.model_copy(update={"profile": "production"})
    if settings.profile == "production" and serves_api:
        for problem in (
            api_keys_problem(settings, _active_managed_keys(settings)),
            signing_keys_problem(settings),
        ):
            problems += [problem] if problem else []
    if problems:
        typer.echo(f"courier: {unsafe_message(problems)}", err=True)
        raise typer.Exit(2)
    return settings


def _active_managed_keys(settings: Settings) -> int:
    if settings.api_keys:
        return 0  # not needed
    import redis

    from core.connections import store_client

    client = store_client(settings, max_connections=2)
    try:
        return ManagedKeys(client).active_count()
    except redis.RedisError:
        return 0
    finally:
        client.close()


def _option_name(arg: str) -> str | None:
    if arg.startswith("--"):
        return arg.split("=", 1)[0]
    if arg.startswith("-") and len(arg) >= 2:
        return arg[:2]
    return None


def worker_argv(user_args: Sequence[str], concurrency: int, high_only: bool = False) -> list[str]:
    """``celery -A workers.app worker`` arguments: Courier's defaults for I/O-bound jobs,
    each replaced by the user's own value for the same option."""
    queues = "jobs.high" if high_only else ",".join(ALL_QUEUES)
    defaults: list[tuple[tuple[str, ...], list[str]]] = [
        (("-P", "--pool"), ["-P", "gevent"]),
        (("-c", "--concurrency"), ["-c", str(concurrency)]),
        (("-Q", "--queues"), ["-Q", queues]),
        (("--without-gossip",), ["--without-gossip"]),
        (("--without-mingle",), ["--without-mingle"]),
        (("-O", "--optimization"), ["-O", "fair"]),
        (("-l", "--loglevel"), ["--loglevel", "INFO"]),
    ]
    if high_only:
        defaults.append((("-n", "--hostname"), ["-n", "high@%h"]))
    given = {_option_name(a) for a in user_args}
    argv = ["-A", "workers.app", "worker"]
    for names, value in defaults:
        if not given.intersection(names):
            argv += value
    return argv + list(user_args)


@cli.command(context_settings=PASS_THROUGH)
def worker(
    ctx: typer.Context,
    high_only: Annotated[
        bool, typer.Option("--high-only", help="A reserved lane: consume only jobs.high")
    ] = False,
) -> None:
    """Run a Celery worker; any celery worker option overrides Courier's defaults
    (-P gevent -c <COURIER_WORKER_CONCURRENCY> -Q jobs.high,jobs.normal,jobs.low,callbacks
    -E --without-gossip --without-mingle -O fair --loglevel INFO)."""
    argv = worker_argv(ctx.args, checked_settings(serves_api=False).worker_concurrency, high_only)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "celery", *argv])


@cli.command()
def simulate(
    port: Annotated[int, typer.Option(help="Port to listen on")] = 9100,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    latency: Annotated[float, typer.Option(help="Seconds before each answer")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of injected 429/500/503")] = 0.0,
    rpm: Annotated[int, typer.Option(help="Requests per minute (0: no limit)")] = 0,
    tpm: Annotated[int, typer.Option(help="Tokens per minute (0: no limit)")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the fault dice")] = 0,
    fault_mix: Annotated[
        str, typer.Option(help="A share per status, e.g. 429=0.15,500=0.10,503=0.05")
    ] = "",
    stream_tps: Annotated[
        float, typer.Option(help="Events per second of a streamed answer (0: all at once)")
    ] = 0.0,
) -> None:
    """Serve a local provider speaking the OpenAI and Anthropic HTTP APIs."""
    from simulator import main as simulator_main

    simulator_main(
        [
            *("--host", host, "--port", str(port), "--latency", str(latency)),
            *("--error-rate", str(error_rate), "--rpm", str(rpm), "--tpm", str(tpm)),
            *("--seed", str(seed), "--fault-mix", fault_mix, "--stream-tps", str(stream_tps)),
        ]
    )


@cli.command()
def submit(
    model: Annotated[str, typer.Option(help="provider:model, e.g. openai:gpt-4o-mini")],
    prompt: Annotated[str, typer.Option(help="The user message (or the text to embed)")],
    priority: Annotated[str, typer.Option(help="high, normal or low")] = "normal",
    callback_url: Annotated[str | None, typer.Option(help="Webhook URL")] = None,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait (on a terminal: show progress) and print the final job"),
    ] = False,
    stream: Annotated[
        bool,
        typer.Option("--stream", help="Stream the reply (chat) and print its text as it comes"),
    ] = False,
    kind: Annotated[str, typer.Option(help="chat or embedding")] = "chat",
    system: Annotated[str | None, typer.Option(help="A system prompt (chat)")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Reply length limit (chat)")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Idempotency-Key")] = None,
    parent: Annotated[str | None, typer.Option(help="Continue this job's conversation")] = None,
    timeout: Annotated[float | None, typer.Option(help="Give up waiting after S")] = None,
    cache_ttl: Annotated[
        int | None, typer.Option(help="Answer from an identical job of the last S seconds")
    ] = None,
    retry_for: Annotated[
        float,
        typer.Option(help="Resend for up to S seconds while the API answers 503 (a failover)"),
    ] = 0.0,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Submit one job and print it as JSON (with --wait, the job once it has ended; exit
    status 1 unless it succeeded). On a terminal --wait shows the job's progress (status,
    attempt, place in the queue, time elapsed) on stderr. --stream submits a streamed chat
    job and prints its text to stdout as it arrives; the final job is printed (to stderr)
    only if it did not succeed."""
    from producers.client import Courier, JobWaitTimeout
    from producers.progress import follow

    request: dict[str, object] | None = None
    if kind == "chat" and (system or max_tokens):
        request = {"messages": [{"role": "user", "content": prompt}]}
        if system:
            request["system"] = system
        if max_tokens:
            request["max_tokens"] = max_tokens
    try:
        with api_call(), Courier(api_url, api_key) as courier:
            job = courier.submit(
                model,
                request,
                prompt=prompt,
                kind=kind,
                priority=priority,
                callback_url=callback_url,
                idempotency_key=idempotency_key,
                cache={"ttl_s": cache_ttl} if cache_ttl is not None else None,
                retry_s=retry_for,
                stream=stream or None,
                parent_job_id=parent,
            )
            tty = sys.stdout.isatty()
            if stream:
                job = follow(courier, job, show=False, stream_to=sys.stdout)
            elif wait and tty and timeout is None:
                job = follow(courier, job, show=True, stream_to=None)
            elif wait:
                job = courier.wait(job["id"], timeout=timeout)
    except JobWaitTimeout as exc:
        typer.echo(json.dumps(exc.job, indent=2))
        raise typer.Exit(1) from None
    if stream:
        if job.get("status") != "succeeded":
            typer.echo(json.dumps(job, indent=2), err=True)
            raise typer.Exit(1)
        return
    typer.echo(json.dumps(job, indent=2))
    if wait and job.get("status") != "succeeded":
        raise typer.Exit(1)


@cli.command()
def usage(
    period: Annotated[
        str | None, typer.Option(help="day, month or total (default: the budget's, else month)")
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Print what the key's tenant spent in a period, against its budget, by model (JSON)."""
    from producers.client import Courier

    with api_call(), Courier(api_url, api_key) as courier:
        report = courier.usage(period)
    typer.echo(json.dumps(report, indent=2))


@cli.command()
def dev(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    flower_port: Annotated[int, typer.Option(help="Flower port")] = 5555,
    demo_only: Annotated[
        bool,
        typer.Option("--demo-only", "--exit-after-demo", help="Exit after the demo job"),
    ] = False,
) -> None:
    """Run the whole system on this machine: Redis, simulator, API, worker, Flower."""
    from producers.dev import run_dev

    raise typer.Exit(run_dev(api_port=port, flower_port=flower_port, demo_only=demo_only))


@keys_cli.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key authenticates as")],
    as_json: Annotated[bool, typer.Option("--json", help="Print id, tenant, key as JSON")] = False,
) -> None:
    """Create a key and print it: this is the only time it is shown."""
    store = _managed_keys()
    try:
        info, key = store.create(tenant)
    except ValueError as exc:
        typer.echo(f"courier: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({**info.to_json(), "key": key}))
        return
    typer.echo(key)
    typer.echo(f"created key {info.id} for tenant {tenant!r}; it is not shown again", err=True)


@keys_cli.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list")] = False,
) -> None:
    """List managed keys: id, tenant, created, revoked (never the key)."""
    store = _managed_keys()
    infos = [info.to_json() for info in store.list()]
    if as_json:
        typer.echo(json.dumps(infos))
        return
    typer.echo(f"{'ID':<14}{'TENANT':<24}{'CREATED':<22}REVOKED")
    for row in infos:
        revoked = row["revoked"] or "-"
        typer.echo(f"{row['id']:<14}{row['tenant']:<24}{row['created']:<22}{revoked}")


@keys_cli.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (courier keys list)")],
) -> None:
    """Revoke a key: requests with it fail from now on."""
    store = _managed_keys()
    info = store.revoke(key_id)
    if info is None:
        typer.echo(f"courier: no managed key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {info.id} of tenant {info.tenant!r}")


@keys_cli.command("webhook-secret")
def keys_webhook_secret() -> None:
    """Print a new Standard Webhooks secret (whsec_ + 32 random bytes) for
    COURIER_WEBHOOK_SECRET."""
    from core.signing import generate_secret

    typer.echo(generate_secret())


@keys_cli.command("signing-key")
def keys_signing_key() -> None:
    """Print a new token signing key, kid:secret, for COURIER_JWT_SIGNING_KEYS (put it
    first; keep the previous key after it until its tokens have expired)."""
    from producers.api.access.tokens import generate_signing_key

    typer.echo(generate_signing_key())


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
