"""The Optuna TPE strategy: contract, idempotent ask/tell against the study, resuming, learning end to end."""

from __future__ import annotations

import copy
import re

import anyio
import numpy as np
import pytest
from mcp import Client
from pydantic import ValidationError

from helpers import agrees_with_decide, assert_valid_section, commit_all
from ratchet.core.ope import OPEError
from ratchet.core.strategy import choice_key
from ratchet.core.strategy import Decision, FeedbackEvent, Strategy
from ratchet.plugins.tuner_strategies import optuna_tpe as O

SPACE = {"variant": {"type": "categorical", "choices": ["A", "B", "C", "D"]},
         "temperature": {"type": "float", "low": 0.0, "high": 2.0},
         "top_k": {"type": "int", "low": 1, "high": 8}}


def make(storage=None, key="k", **kw):
    kw.setdefault("space", SPACE)
    return O.OptunaTPE(key, O.OptunaTPE.Config(storage=storage, **kw))


def objective(p):
    bonus = {"A": 0.0, "B": 0.3, "C": 1.0, "D": 0.1}[p["variant"]]
    return bonus - (p.get("temperature", 0.7) - 0.7) ** 2 - 0.02 * abs(p.get("top_k", 5) - 5)


def event(decision, value, n, ts=None):
    return FeedbackEvent(event_id=f"e{n}", tool="score", conversation_id=f"c{n}", payload={"value": value},
                         decision=decision, ts=float(n if ts is None else ts))


def play(st, section, n, rng, start=0):
    """n decisions against one section (delayed feedback) and their scored events."""
    return [event(d, objective(d.choice), start + j) for j in range(n) for d in [st.decide(section, {}, rng)]]


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


# --- contract ---------------------------------------------------------------------------------------


def test_contract_and_initial_section():
    assert issubclass(O.OptunaTPE, Strategy) and (O.OptunaTPE.name, O.OptunaTPE.family) == ("optuna", "optuna")
    st = make()
    s = st.initial_state()
    assert_valid_section(st, s)
    assert s["pool"] == [] and s["study"] == "ratchet:k" and st.storage_url is None  # in memory
    assert st.served(s) == {"variant": "A", "temperature": 1.0, "top_k": 4}
    assert make(space={**SPACE, "variant": {**SPACE["variant"], "default": "B"}}).served(s)["variant"] == "B"
    assert {t.name: t.batch_of for t in st.feedback_tools()} == {"score": None, "score_batch": "score"}
    assert set(st.kpis(s)) >= {"trials", "best_value", "best_params"}


def test_bound_to_the_workspace_store(ws):
    from ratchet.core.strategy import build_strategies

    cls = O.OptunaTPE.for_workspace(ws)
    assert cls is O.OptunaTPE.for_workspace(ws) and issubclass(cls, O.OptunaTPE)
    assert cls.workspace_storage == ws.store_url  # the store's database, SQLite or PostgreSQL
    st = cls("tune", O.OptunaTPE.Config(space=SPACE))
    assert (st.storage_url, st.study_name) == (cls.workspace_storage, "support-desk:tune")
    explicit = cls("tune", O.OptunaTPE.Config(space=SPACE, storage="sqlite:///.ratchet/other.db", study="s1"))
    assert (explicit.storage_url, explicit.study_name) == (f"sqlite:///{ws.root}/.ratchet/other.db", "s1")
    assert O.OptunaTPE.for_workspace(None) is O.OptunaTPE
    assert build_strategies(ws, ws.plugins)  # the default workspace still builds


@pytest.mark.parametrize("space, extra, field", [
    ({}, {}, "space"),
    ({"x": {"type": "normal", "low": 0, "high": 1}}, {}, "space.x"),
    ({"x": {"type": "float", "low": 1, "high": 1}}, {}, "space.x.float"),
    ({"x": {"type": "float", "low": 0, "high": 1, "log": True}}, {}, "space.x.float"),
    ({"x": {"type": "int", "low": 3, "high": 2}}, {}, "space.x.int"),
    ({"x": {"type": "categorical", "choices": []}}, {}, "space.x.categorical.choices"),
    ({"x": {"type": "categorical", "choices": ["a", "a"]}}, {}, "space.x.categorical"),
    ({"x": {"type": "categorical", "choices": ["a"], "default": "b"}}, {}, "space.x.categorical"),
    ({"x": {"type": "float", "low": 0, "high": 1, "step": 0.1}}, {}, "space.x.float.step"),
    ({"ratchet_ask": {"type": "int", "low": 0, "high": 2}}, {}, "space"),
    (SPACE, {"pool": 0}, "pool"),
    (SPACE, {"repeats": 0}, "repeats"),
    (SPACE, {"sampler": "tpe"}, "sampler"),
])
def test_config_errors_name_the_field(space, extra, field):
    with pytest.raises(ValidationError) as err:
        O.OptunaTPE.Config(space=space, **extra)
    assert field in str(err.value)


def test_config_error_through_the_workspace(ws_path):
    from ratchet.core.errors import ConfigError
    from ratchet.core.strategy import build_strategies
    from ratchet.core.workspace import Workspace

    configure(ws_path, 'key = "tune"\nstrategy = "optuna"\nspace = {t = {type = "float", low = 2.0, high = 1.0}}')
    ws = Workspace.open(ws_path)
    with pytest.raises(ConfigError) as err:
        build_strategies(ws, ws.plugins)
    assert err.value.field.startswith("tuner.strategies[0].space.t")


# --- ask/tell, purity, idempotency ------------------------------------------------------------------


def test_warm_up_then_pool(db):
    st = make(db, seed=1)
    s0 = st.initial_state()
    rng = np.random.default_rng(0)
    warm = play(st, s0, 5, rng)
    assert all(e.decision.info == {"trial": None} and st._valid(e.decision.choice) for e in warm)
    s1 = st.apply(s0, warm)
    assert_valid_section(st, s1)
    assert (s1["trials"], s1["added"], s1["asked"], len(s1["pool"])) == (5, 5, 8, 8)
    assert [e["number"] for e in s1["pool"]] == list(range(8))  # the pool is asked first; warm-up got 8..12
    assert st.apply(s0, warm) == s1  # idempotent: the warm-up trials and asks are found, not redone
    assert len(st.study().trials) == 13
    d = st.decide(s1, {}, rng)
    assert d.info["trial"] in range(8) and d.choice == next(e["params"] for e in s1["pool"]
                                                                   if e["number"] == d.info["trial"])


def test_apply_is_pure_deterministic_and_batch_invariant(db):
    st = make(db, seed=2)
    rng = np.random.default_rng(0)
    s1 = st.apply(st.initial_state(), play(st, st.initial_state(), 3, rng))
    before = copy.deepcopy(s1)
    evs = play(st, s1, 12, rng, start=10)
    s2 = st.apply(s1, evs)
    assert s1 == before  # input untouched
    assert st.apply(s1, evs) == s2  # re-applying tells nothing twice and asks nothing new
    one_by_one = s1
    for e in evs:
        one_by_one = st.apply(one_by_one, [e])
    assert one_by_one == s2
    fresh = make(db, seed=2)  # another process would build its own instance: same answer from the DB
    assert fresh.apply(s1, evs) == s2
    assert_valid_section(st, s2)
    study = fresh.study()
    assert {t.state.name for t in study.trials} == {"COMPLETE", "RUNNING"}
    assert sum(t.state.name == "RUNNING" for t in study.trials) == len(s2["pool"])


def test_scores_for_told_trials_become_trials_and_junk_is_skipped(db):
    st = make(db, seed=3, repeats=2)
    s = st.apply(st.initial_state(), play(st, st.initial_state(), 1, np.random.default_rng(0)))
    e0 = s["pool"][0]
    d = Decision(strategy="k", choice=e0["params"], info={"trial": e0["number"]})
    s = st.apply(s, [event(d, 1.0, 10)])
    assert s["pool"][0]["scores"] == [1.0] and s["trials"] == 1  # waits for the second score
    s = st.apply(s, [event(d, 3.0, 11), event(d, 0.5, 12)])
    assert e0["number"] not in [e["number"] for e in s["pool"]] and len(s["pool"]) == 8
    assert s["best"] == {"number": e0["number"], "params": e0["params"], "value": 2.0}
    assert s["added"] == 2  # the warm-up sample and the score after the tell
    assert st.study().trials[e0["number"]].value == 2.0
    junk = [event(None, 1.0, 20), event(d, "good", 21),
            event(Decision(strategy="k", choice={"variant": "Z", "temperature": 1, "top_k": 1},
                           info={"trial": None}), 1.0, 22),
            event(Decision(strategy="k", choice=st.served(s), info={"served": True}), 1.0, 23)]
    out = st.apply(s, junk)
    assert out["skipped"] == s["skipped"] + 4 and out["trials"] == s["trials"]


def test_decide_prefers_fewest_scores_and_explore_false_serves_the_best(db):
    st = make(db, seed=4, repeats=3)
    s = st.apply(st.initial_state(), play(st, st.initial_state(), 1, np.random.default_rng(0)))
    first = st.decide(s, {}, np.random.default_rng(1))
    s = st.apply(s, [event(first, 0.5, 5)])
    rng = np.random.default_rng(2)
    picks = {st.decide(s, {}, rng).info["trial"] for _ in range(80)}
    assert first.info["trial"] not in picks and len(picks) == 7
    best = make(db, seed=4, explore=False).decide(s, {}, rng)
    assert best.choice == s["best"]["params"] and best.info == {"served": True}


def test_another_space_starts_afresh(db):
    st = make(db, seed=5)
    s = st.apply(st.initial_state(), play(st, st.initial_state(), 3, np.random.default_rng(0)))
    other = make(db, seed=5, space={"variant": SPACE["variant"]})
    assert other.kpis(s)["trials"] == 0 and other.decide(s, {}, np.random.default_rng(0)).info == {"trial": None}
    s2 = other.apply(s, play(other, other.initial_state(), 2, np.random.default_rng(1)))
    assert all(set(e["params"]) == {"variant"} for e in s2["pool"])  # new asks, not the old space's trials


def test_finds_the_best_categorical_and_continuous_pair():
    st = make(seed=0, pool=4)
    s = st.initial_state()
    rng = np.random.default_rng(0)
    for r in range(25):  # 25 promotions of 6 noisy events each
        evs = [event(d, objective(d.choice) + rng.normal(0, 0.02), 6 * r + j)
               for j in range(6) for d in [st.decide(s, {}, rng)]]
        s = st.apply(s, evs)
    best = st.served(s)
    assert best["variant"] == "C" and abs(best["temperature"] - 0.7) < 0.15, st.kpis(s)


# --- through the tuner and the servers --------------------------------------------------------------

PROBE = '''
from ratchet import hookimpl
from ratchet.runner.context import RunContext


@hookimpl
def ratchet_register_runner_tools(register, workspace):
    def evaluate(conversation_id: str, run: RunContext) -> dict:
        """Return the params this call was served with (the strategy's choice is merged into them)."""
        return {k: run.params[k] for k in ("variant", "temperature")}

    register(evaluate)
'''

TUNE = ('key = "tune"\nstrategy = "optuna"\nseed = 3\npool = 6\n'
        'space = {variant = {type = "categorical", choices = ["A", "B", "C", "D"]}, '
        'temperature = {type = "float", low = 0.0, high = 2.0}}')


def configure(ws_path, strategy: str) -> None:
    """Use the probe tool plus ``strategy`` (the body of one [[tuner.strategies]] table); promote by hand."""
    (ws_path / "plugins" / "probe.py").write_text(PROBE)
    toml = ws_path / "ratchet.toml"
    text = toml.read_text().replace('plugins = ["plugins/support_desk.py"]',
                                    'plugins = ["plugins/support_desk.py", "plugins/probe.py"]')
    text = re.sub(r"\[\[tuner\.strategies\]\].*?(?=\[tuner\.promotion\])",
                  lambda _: f"[[tuner.strategies]]\n{strategy}\n\n", text, flags=re.S)
    toml.write_text(text.replace("every_events = 50", "every_events = 0"))
    commit_all(ws_path)


def serve_and_score(ws, tuner, first, n, rng):
    from ratchet.runner.service import Runner

    runner = Runner(ws, source="staging", seed=first)
    for i in range(first, first + n):
        point = runner.call("evaluate", {"conversation_id": f"q{i}"})
        tuner.feedback("score", {"conversation_id": f"q{i}", "value": objective(point) + rng.normal(0, 0.02)})
        tuner.apply_pending()
        runner.reload_if_changed()


def test_study_lives_in_the_store_and_a_restarted_tuner_resumes_it(ws_path):
    from ratchet.core.workspace import Workspace
    from ratchet.tuner.service import Tuner

    configure(ws_path, TUNE)
    ws = Workspace.open(ws_path)
    tuner = Tuner(ws)
    rng = np.random.default_rng(0)
    serve_and_score(ws, tuner, 0, 15, rng)
    before = ws.state.read("staging").document["strategies"]["tune"]
    numbers = {e["number"] for e in before["pool"]}
    # a new process: new Workspace, Tuner and strategy objects, no cached storage or study
    O._storages.clear()
    O._bound.cache_clear()
    ws2 = Workspace.open(ws_path)
    tuner2 = Tuner(ws2)
    assert tuner2.strategies["tune"].study_name == "support-desk:tune"
    serve_and_score(ws2, tuner2, 15, 15, rng)
    after = ws2.state.read("staging").document["strategies"]["tune"]
    assert after["trials"] == 30 and after["asked"] > before["asked"]
    assert min(e["number"] for e in after["pool"] if e["number"] not in numbers) > max(numbers)
    study = tuner2.strategies["tune"].study()
    assert len(study.trials) == after["trials"] + len(after["pool"])  # no orphan or duplicate trials
    with ws.store.engine.connect() as con:  # the store's own database
        assert con.exec_driver_sql("select study_name from studies").fetchall() == [("support-desk:tune",)]
        assert con.exec_driver_sql("select count(*) from feedback").scalar_one() == 30
    assert_valid_section(tuner2.strategies["tune"], after)
    # staging rebuilt from active + the log equals the incremental one: nothing is re-told or re-asked
    incremental = ws2.state.read("staging").document
    ws2.state.write("staging", ws2.state.read("active").document, None)
    assert tuner2.rebuild_staging()["events_applied"] == 30
    assert ws2.state.read("staging").document == incremental
    assert len(study.trials) == after["trials"] + len(after["pool"])


async def _call(client, tool, args=None):
    r = await client.call_tool(tool, args or {})
    return r.is_error, (r.content[0].text if r.is_error else r.structured_content)


@pytest.mark.anyio
async def test_learns_through_the_mcp_servers_with_promotions(ws_path):
    from ratchet.core.workspace import Workspace
    from ratchet.runner.server import build_server as runner_server
    from ratchet.runner.service import Runner
    from ratchet.tuner.server import build_server as tuner_server
    from ratchet.tuner.service import Tuner

    configure(ws_path, TUNE)
    ws = Workspace.open(ws_path)
    runner = Runner(ws, seed=0)  # serves active: the choice (params dict) is merged into params
    rng = np.random.default_rng(5)
    n = 0
    async with Client(runner_server(runner)) as rc, Client(tuner_server(Tuner(ws))) as tc:
        for rounds in range(1, 15):  # a round: 8 calls scored in one batch, then a promotion
            batch = []
            for _ in range(8):
                err, point = await _call(rc, "evaluate", {"conversation_id": f"m{n}"})
                assert not err and set(point) == {"variant", "temperature"}
                batch.append({"conversation_id": f"m{n}", "value": objective(point) + float(rng.normal(0, 0.02)),
                              "event_id": f"ev-{n}"})
                n += 1
            err, ack = await _call(tc, "score_batch", {"events": batch})
            assert not err and ack["accepted"] == 8
            with anyio.fail_after(10):
                while (await _call(tc, "status"))[1]["unapplied_events"]:
                    await anyio.sleep(0.02)
            err, outcome = await _call(tc, "promote")
            assert not err and outcome["promoted"], outcome
            runner.reload_if_changed()
        err, again = await _call(tc, "score", {"conversation_id": "m0", "value": 9.0, "event_id": "ev-0"})
        assert not err and again["duplicates"] == 1
        _, status = await _call(tc, "status")
    kpis = status["strategies"]["tune"]["kpis"]
    assert kpis["trials"] == n == 8 * 14 and kpis["skipped"] == 0
    best = status["strategies"]["tune"]["served"]
    assert best["variant"] == "C" and abs(best["temperature"] - 0.7) < 0.2, kpis
    assert ws.versions.latest().name == "v0.1.14"


@pytest.mark.anyio
@pytest.mark.parametrize("tool, args, field", [
    ("score", {"value": 1}, "conversation_id"),
    ("score", {"conversation_id": "m0"}, "value"),
    ("score", {"conversation_id": "m0", "value": [1]}, "value"),
    ("score", {"conversation_id": "m0", "value": 1, "trial": 3}, "trial"),
    ("score", {"conversation_id": "ghost", "value": 1}, "conversation_id"),
    ("score_batch", {}, "events"),
    ("score_batch", {"events": [{"conversation_id": "m0", "value": True}]}, "events[0].value"),
    ("score_batch", {"events": [{"conversation_id": "m0", "value": 1}, {"value": 1}]}, "events[1].conversation_id"),
])
async def test_bad_feedback_names_the_field_and_stores_nothing(ws_path, tool, args, field):
    from ratchet.core.workspace import Workspace
    from ratchet.runner.service import Runner
    from ratchet.tuner.server import build_server as tuner_server
    from ratchet.tuner.service import Tuner

    configure(ws_path, TUNE)
    ws = Workspace.open(ws_path)
    Runner(ws, seed=0).call("evaluate", {"conversation_id": "m0"})
    async with Client(tuner_server(Tuner(ws))) as tc:
        is_error, text = await _call(tc, tool, args)
    assert is_error and field in text
    assert ws.store.last_feedback_seq() == 0

# --- choice_probabilities (off-policy evaluation) ----------------------------------------------------


DISCRETE = {"variant": {"type": "categorical", "choices": ["A", "B", "C"]},
            "top_k": {"type": "int", "low": 1, "high": 8, "log": True}}


def test_optuna_warm_up_over_a_discrete_space_is_exact_and_logged():
    st = make(space=DISCRETE, seed=1)
    probs = agrees_with_decide(st, st.initial_state(), {}, n=6000, tol=0.02)
    assert len(probs) == 3 * 8
    top = {k: sum(p for c, p in probs.items() if f'"top_k": {k},' in c) for k in range(1, 9)}
    assert top[1] > top[2] > top[8]  # log scale: small values are likelier
    linear = make(space={"top_k": {"type": "int", "low": 1, "high": 4}})
    assert agrees_with_decide(linear, linear.initial_state(), {}) == {
        f'{{"top_k": {k}}}': pytest.approx(0.25) for k in range(1, 5)}


def test_optuna_pool_and_explore_off_and_the_refused_continuous_warm_up(tmp_path):
    st = make(f"sqlite:///{tmp_path / 'study.db'}", seed=4, repeats=3)
    s = st.apply(st.initial_state(), play(st, st.initial_state(), 1, np.random.default_rng(0)))
    first = st.decide(s, {}, np.random.default_rng(1))
    s = st.apply(s, [event(first, 0.5, 5)])
    probs = agrees_with_decide(st, s, {}, n=2000)
    assert len(probs) == 7 and choice_key(first.choice) not in probs
    best = make(f"sqlite:///{tmp_path / 'study.db'}", seed=4, explore=False)
    assert best.decide(s, {}, np.random.default_rng(0)).propensity == 1.0
    assert best.choice_probabilities(s, {}, np.random.default_rng(0)) == {choice_key(s["best"]["params"]): 1.0}

    warm = make(None, seed=4)  # the space has a float dimension: a density, refused
    d = warm.decide(warm.initial_state(), {}, np.random.default_rng(0))
    assert d.info == {"trial": None} and d.propensity is None  # logged without a propensity (skipped by OPE)
    with pytest.raises(OPEError) as err:
        warm.choice_probabilities(warm.initial_state(), {}, np.random.default_rng(0))
    assert "temperature" in err.value.message and "density" in err.value.message and err.value.field == "state"
    assert "after the first promotion" in err.value.fix
    big = make(space={n: {"type": "int", "low": 1, "high": 100} for n in "abc"})
    with pytest.raises(OPEError, match="1000000 points"):
        big.choice_probabilities(big.initial_state(), {}, np.random.default_rng(0))
