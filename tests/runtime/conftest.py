from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Queue

from apps.runtime.config import ModelSettings
from controlplane.celery import app as celery_app
from tests.conftest import ROOT
from tests.runtime.fake_openai import FakeOpenAI, running


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    yield from running()


@pytest.fixture
def openai_models(settings: Any, fake_openai: FakeOpenAI) -> ModelSettings:
    """The small and frontier tiers served by the fake server (as MODEL_PROVIDER=openai)."""
    models: ModelSettings = dataclasses.replace(
        settings.RUNTIME_MODELS,
        provider="openai",
        base_url=fake_openai.base_url,
        api_key="sk-test-0123456789abcdef",
        small_model="gpt-4o-mini",
        frontier_model="gpt-4o",
        price_provider="openai",
        timeout_seconds=2.0,
        max_retries=1,
    )
    settings.RUNTIME_MODELS = models
    return models


@pytest.fixture
def own_queue() -> Iterator[str]:
    """Tasks sent by the test go to a queue of its own that no worker reads, so that a worker
    started by another test cannot race the steps this test executes in-process."""
    name = f"test-runtime-{uuid.uuid4().hex[:8]}"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = name
    try:
        yield name
    finally:
        celery_app.conf.task_default_queue = previous
        with celery_app.connection_for_write() as connection:
            Queue(name).bind(connection.default_channel).purge()


@dataclasses.dataclass(frozen=True)
class Flow:
    """A workflow with a published book (REFUND_CONTROLS plus what the test adds), its agent
    (owned by the admin user) and the tool issue_refund; `owner` is the book's escalation
    owner (the risk user)."""

    workflow: Any
    agent: Any
    tool: Any
    book: Any
    owner: Any


def make_flow(
    user_for: Any,
    *,
    slug: str = "rt-flow",
    agent: str = "rt-bot",
    book: dict[str, Any] | None = None,
    sandbox_url: str = "",
) -> Flow:
    from apps.accounts.roles import Role
    from tests.factories import (
        REFUND_CONTROLS,
        make_agent,
        make_published_book,
        make_tool,
        make_workflow,
    )

    owner = user_for(Role.RISK)
    workflow = make_workflow(slug=slug, name=slug)
    tool = make_tool()
    if sandbox_url:
        from tests.sandbox.conftest import SANDBOX_TOKEN

        tool.endpoint_url = f"{sandbox_url}/refunds"
        tool.credential_secret = SANDBOX_TOKEN
        tool.save()
    bot = make_agent(agent, owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
    version = make_published_book(
        workflow=workflow, author=owner, values={**REFUND_CONTROLS, **(book or {})}
    )
    return Flow(workflow=workflow, agent=bot, tool=tool, book=version, owner=owner)


CLIENT_PATH = str(ROOT / "clients" / "python")


@pytest.fixture(scope="session")
def client_module() -> Any:
    """The Python client from clients/python, imported as an agent would (no Django in it)."""
    import importlib
    import sys

    if CLIENT_PATH not in sys.path:
        sys.path.insert(0, CLIENT_PATH)
    return importlib.import_module("escapement_client")


@pytest.fixture
def demo_world(
    transactional_db: Any, user_for: Any, live_server: Any, settings: Any
) -> Iterator[str]:
    """The demo world of `make run` with its tools pointed at the live server's sandbox, which
    is switched on, and given its credential as `seed_demo` gives it; returns the sandbox's
    URL."""
    from apps.accounts.roles import Role
    from apps.actions import connectors
    from apps.demo import agents
    from apps.demo.sandbox import sandbox_seed
    from apps.demo.world import SANDBOX, demo_world_ensure
    from apps.registry.models import Tool
    from tests.sandbox.conftest import sandbox_open

    sandbox_open(settings)
    sandbox = f"{live_server.url}/sandbox"
    demo_world_ensure(
        author=user_for(Role.RISK),
        owner=user_for(Role.ADMIN),
        escalation_owner=user_for(Role.SUPERVISOR),
    )
    for tool in Tool.objects.all():
        tool.endpoint_url = tool.endpoint_url.replace(SANDBOX, sandbox)
        tool.undo_endpoint_url = tool.undo_endpoint_url.replace(SANDBOX, sandbox)
        tool.save()
    sandbox_seed()
    agents.demo_runtime_ensure()
    yield sandbox
    # Keep-alive connections hold live-server threads (and their database connections) open.
    connectors._pool.clear()
    agents._http.clear()
