"""Every extension point of Ratchet. Hooks take keyword arguments only; an impl may take a subset.

Contributions are ``ratchet_register_<things>(register, workspace)``: call ``register(obj)`` once per
object; the core validates it, records which plugin gave it, and refuses duplicates. Events are
``ratchet_on_<event>``: every impl is called and results are ignored. Choices are ``firstresult`` hooks
named for the decision. The hook reference in the docs is rendered from these docstrings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from ratchet.core.workspace import Workspace

hookspec = pluggy.HookspecMarker("ratchet")


# --- runner tools -----------------------------------------------------------------------------------


@hookspec
def ratchet_register_runner_tools(register: Callable[..., None], workspace: Workspace) -> None:
    """Register the tools the runner serves over MCP.

    :param register: call ``register(fn)`` with a type-hinted function (or bound method). Its name is the
        tool name, its docstring the description, its parameters the JSON Schema, except a parameter
        annotated ``RunContext``, through which the tool reads this call's parameters. Optional keyword
        ``name=`` overrides the tool name.
    :param workspace: the workspace being served.

    Example::

        @hookimpl
        def ratchet_register_runner_tools(register, workspace):
            def answer(question: str, conversation_id: str, run: RunContext) -> dict:
                return {"answer": f"[{run.params['style']}] ..."}
            register(answer)
    """


@hookspec
def ratchet_extract_features(tool: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any] | None:
    """Compute a call's features before strategies decide (contextual bandits and rules use them).

    The runner merges the dicts of all impls into ``context["features"]`` for ``Strategy.decide`` and
    logs them with the decision, where feedback (e.g. a rule-mining ``label``) finds them later.

    :param tool: the runner tool being called.
    :param arguments: the call's arguments.
    :param workspace: the workspace being served.
    :return: ``{name: value}`` with JSON values, or None.

    Example::

        @hookimpl
        def ratchet_extract_features(tool, arguments):
            return {"question_length": len(arguments.get("question", "").split())}
    """


# --- tuner strategies -------------------------------------------------------------------------------


@hookspec
def ratchet_register_strategies(register: Callable[[type], None], workspace: Workspace | None) -> None:
    """Register tuner strategy classes (subclasses of ``ratchet.Strategy``).

    A workspace selects strategies by ``name`` in ``[[tuner.strategies]]`` of ``ratchet.toml``.

    :param register: call ``register(cls)`` once per strategy class; a duplicate ``name`` is an error.
    :param workspace: the workspace, or None when listing what is installed.

    Example::

        @hookimpl
        def ratchet_register_strategies(register):
            register(ThompsonSampling)
    """


# --- test tiers -------------------------------------------------------------------------------------


@hookspec
def ratchet_register_expectations(register: Callable[..., None]) -> None:
    """Register expectation kinds for test cases (beyond equals, contains, regex, schema, metric).

    :param register: call ``register(name, check)`` where ``check(result, spec) -> str | None`` returns
        None on a pass or a one-line reason on a failure.

    Example::

        @hookimpl
        def ratchet_register_expectations(register):
            register("startswith", lambda result, spec: None if str(result).startswith(spec) else "no")
    """


@hookspec
def ratchet_collect_cases(tier: str, workspace: Workspace) -> list[dict[str, Any]] | None:
    """Contribute extra test cases to a tier, beyond the YAML files under ``tests/<tier>/``.

    :param tier: ``micro``, ``fast`` or ``full``.
    :param workspace: the workspace under test.
    :return: a list of case dicts (same shape as the YAML cases) or None. Results of all impls are joined.
    """


# --- state migrations -------------------------------------------------------------------------------


@hookspec
def ratchet_register_migrations(register: Callable[..., None], workspace: Workspace | None) -> None:
    """Register state migrations, applied when a document's ``schema_version`` is older than the schema's.

    :param register: call ``register(from_version, to_version, fn)``; ``fn(document) -> document`` must be
        pure. Migrations chain: 1→2 then 2→3.
    :param workspace: the workspace whose state is migrated.

    Example::

        @hookimpl
        def ratchet_register_migrations(register):
            def add_tone(doc):
                return {**doc, "schema_version": 2, "params": {**doc["params"], "tone": "neutral"}}
            register(1, 2, add_tone)
    """


# --- architect planners -----------------------------------------------------------------------------


@hookspec
def ratchet_register_planners(register: Callable[..., None], workspace: Workspace | None) -> None:
    """Register Architect planners: objects with ``name`` and ``plan(request, session) -> Plan``.

    ``request`` is a ``ratchet.PlanRequest`` (the feedback text, or the Triggerer's KPI
    report); ``session`` is the job's workbench (``templates()``, ``template(name)``, ``read_file(path)``,
    ``apply(action)``, ``run_tiers(tiers)``) on the job's own git worktree. Return a
    ``ratchet.Plan``: the job applies its actions, then tests, bumps, merges and tags.

    :param register: call ``register(planner)``; a duplicate ``name`` is an error.
    :param workspace: the workspace the Architect serves.

    Example::

        class TopK:
            name = "top-k"

            def plan(self, request, session):
                return Plan(summary="retrieve more", actions=[SetState(pointer="/params/top_k", value=5)])

        @hookimpl
        def ratchet_register_planners(register):
            register(TopK())
    """


@hookspec(firstresult=True)
def ratchet_select_planner(workspace: Workspace, available: list[str]) -> str | None:
    """Choose which registered planner the Architect uses. ``firstresult``: the first non-None wins.

    The first-party impl runs last: ``[architect] planner`` if set, else ``llm`` when ``[architect] model``
    is set, else ``playbook``.

    :param workspace: the workspace (its ``[architect]`` config names a planner or a chat model).
    :param available: names of the registered planners.
    :return: a planner name, or None to leave the choice to the next impl.

    Example::

        @hookimpl
        def ratchet_select_planner(workspace, available):
            return "top-k" if "top-k" in available else None
    """


# --- event observers --------------------------------------------------------------------------------


@hookspec
def ratchet_on_version(workspace: Workspace, version: str, metadata: dict[str, Any]) -> None:
    """Called after a version (tag) is made. Results are ignored; an impl must not raise.

    :param workspace: the workspace that was versioned.
    :param version: the new version, e.g. ``v0.1.3``.
    :param metadata: the JSON metadata stored in the annotated tag (kind, bump, reason, author, …).
    """


@hookspec
def ratchet_on_event(workspace: Workspace, kind: str, payload: dict[str, Any]) -> None:
    """Called for every event written to the store's event log (promotions, rollbacks, jobs, triggers).

    :param workspace: the workspace.
    :param kind: the event kind, e.g. ``state.promoted`` or ``job.succeeded``.
    :param payload: the event's JSON payload.
    """


# --- template libraries -----------------------------------------------------------------------------


@hookspec
def ratchet_register_template_libraries(register: Callable[..., None]) -> None:
    """Register copier template libraries: folders whose subfolders each hold a ``copier.yml``.

    :param register: call ``register(path, family=None)``; ``family`` (runner, strategy, scaffold, …)
        applies to every template in it unless the template's ``copier.yml`` sets ``_ratchet_family``.

    Example::

        @hookimpl
        def ratchet_register_template_libraries(register):
            register(Path(__file__).parent / "templates", family="strategy")
    """


# --- commands ---------------------------------------------------------------------------------------


@hookspec
def ratchet_register_commands(cli: click.Group) -> None:
    """Add commands to the ``ratchet`` CLI.

    :param cli: the root click group; use ``@cli.command()``.
    """
