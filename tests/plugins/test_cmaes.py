"""The CMA-ES strategy: contract, purity, pycma equivalence, deadlines, restarts, and learning end to end."""

from __future__ import annotations

import base64
import copy
import re
import subprocess
import sys
import zlib

import anyio
import numpy as np
import pytest
from mcp import Client
from pydantic import ValidationError

from helpers import agrees_with_decide, assert_valid_section, commit_all
from ratchet.core.ope import LoggedCall, OPEError, evaluate
from ratchet.core.strategy import choice_key
from ratchet.core.strategy import Decision, FeedbackEvent, Strategy
from ratchet.plugins.tuner_strategies import cmaes as C

NAMES = ["a", "b", "c"]
OPT5 = {"x0": 0.2, "x1": 0.8, "x2": 0.5, "x3": 0.35, "x4": 0.65}


def make(names=NAMES, low=0.0, high=1.0, **kw):
    return C.CMAES("k", C.CMAES.Config(dimensions={n: {"low": low, "high": high} for n in names}, **kw))


def sphere(point, opt=None):
    opt = opt or {n: 0.3 for n in point}
    return float(sum((point[n] - opt[n]) ** 2 for n in point))


def event(decision, value, n, ts=None):
    return FeedbackEvent(event_id=f"e{n}", tool="score", conversation_id=f"c{n}", payload={"value": value},
                         decision=decision, ts=float(n if ts is None else ts))


def run(st, section, evals, rng, f=sphere, start=0):
    """``evals`` decide -> score -> apply rounds (apply after every event, like promotion per event)."""
    for n in range(start, start + evals):
        d = st.decide(section, {}, rng)
        section = st.apply(section, [event(d, -f(d.choice), n)])
    return section


# --- contract ---------------------------------------------------------------------------------------


def test_contract_and_initial_section():
    assert issubclass(C.CMAES, Strategy) and C.CMAES.family == "cmaes" and C.CMAES.name == "cmaes"
    st = make()
    s = st.initial_state()
    assert_valid_section(st, s)
    assert s == st.initial_state() and s is not st.initial_state()
    assert s["generation"] == 0 and len(s["candidates"]) == s["popsize"] == 7  # pycma: 4 + int(3 ln 3)
    assert all(list(p) == NAMES for p in s["points"])
    assert st.served(s) == {n: 0.5 for n in NAMES}  # the mean starts at the middle
    assert {t.name: t.batch_of for t in st.feedback_tools()} == {"score": None, "score_batch": "score"}
    assert set(st.kpis(s)) >= {"generation", "best_value", "sigma", "evaluations", "restarts"}


@pytest.mark.parametrize("dims, extra, field", [
    ({}, {}, "dimensions"),
    ({"a": {"low": 1, "high": 0}}, {}, "dimensions.a"),
    ({"a": {"low": 0, "high": 1, "x0": 2}}, {}, "dimensions.a"),
    ({"a": {"low": 0, "high": 1, "step": 2}}, {}, "dimensions.a.step"),
    ({"a": {"low": 0, "high": 1}}, {"sigma0": 0}, "sigma0"),
    ({"a": {"low": 0, "high": 1}}, {"popsize": 1}, "popsize"),
    ({"a": {"low": 0, "high": 1}}, {"deadline_seconds": -1}, "deadline_seconds"),
    ({"a": {"low": 0, "high": 1}}, {"restart_after": 0}, "restart_after"),
    ({"a": {"low": 0, "high": 1}}, {"popsize_factor": 2}, "popsize_factor"),
])
def test_config_errors_name_the_field(dims, extra, field):
    with pytest.raises(ValidationError) as err:
        C.CMAES.Config(dimensions=dims, **extra)
    assert field in str(err.value)


def test_config_error_through_the_workspace(ws_path):
    from ratchet.core.errors import ConfigError
    from ratchet.core.strategy import build_strategies
    from ratchet.core.workspace import Workspace

    configure(ws_path, 'key = "point"\nstrategy = "cmaes"\ndimensions = {a = {low = 1.0, high = 0.0}}\n')
    ws = Workspace.open(ws_path)
    with pytest.raises(ConfigError) as err:
        build_strategies(ws, ws.plugins)
    assert err.value.field == "tuner.strategies[0].dimensions.a"


# --- purity and determinism -------------------------------------------------------------------------


def test_apply_is_pure_deterministic_and_batch_invariant():
    st = make(seed=5)
    rng = np.random.default_rng(0)
    s1 = run(st, st.initial_state(), 20, rng)
    before = copy.deepcopy(s1)
    evs = [event(st.decide(s1, {}, rng), -0.1 * j, 100 + j) for j in range(15)]  # delayed: one section
    s2 = st.apply(s1, evs)
    assert s1 == before  # input untouched
    assert s2 == st.apply(s1, evs) == make(seed=5).apply(copy.deepcopy(s1), evs)  # deterministic, any instance
    one_by_one = s1
    for e in evs:
        one_by_one = st.apply(one_by_one, [e])
    assert one_by_one == s2
    assert_valid_section(st, s2)
    assert st.apply(s2, []) == s2 and st.apply(s2, []) is not s2


def test_same_as_pycma_directly_with_the_same_random_numbers():
    """The section round trip (pickle, JSON candidates) changes nothing pycma computes."""
    st = make(names=["a", "b", "c", "d"], low=-5.0, high=5.0, seed=3)
    f = lambda x: float(sum((v - 4.5) ** 2 for v in x))  # noqa: E731 -- optimum near the bound
    es = st._new_es(st.x0, 0.3, None)
    direct = []
    for g in range(25):
        st._seed(es, g)
        xs = es.ask()
        direct.append([[float(v) for v in x] for x in xs])
        es.tell(xs, [f(x) for x in xs])
    s, rng, via, n = st.initial_state(), np.random.default_rng(0), [], 0
    while s["generation"] < 25:
        if not any(s["scores"]):
            via.append(s["candidates"])
        d = st.decide(s, {}, rng)
        s = st.apply(s, [event(d, -f(s["candidates"][d.info["candidate"]]), n)])
        n += 1
    assert via == direct


def test_section_is_byte_identical_across_processes():
    """pycma's archives are keyed by hash(bytes), which PYTHONHASHSEED changes; the section must not."""
    code = ("import json, hashlib, numpy as np\nfrom ratchet.core.strategy import FeedbackEvent\n"
            "from ratchet.plugins.tuner_strategies import cmaes as C\n"
            "st = C.CMAES('k', C.CMAES.Config(dimensions={n: {'low': 0, 'high': 1} for n in 'abc'}, seed=2))\n"
            "s, rng = st.initial_state(), np.random.default_rng(0)\n"
            "for n in range(30):\n"
            "    d = st.decide(s, {}, rng)\n"
            "    s = st.apply(s, [FeedbackEvent(event_id=str(n), tool='score', payload={'value': -n % 7},"
            " decision=d, ts=n)])\n"
            "print(hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest())\n")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": h, "PATH": ""}).stdout for h in ("1", "2")}
    assert len(out) == 1


def test_unreadable_pickle_restarts_at_the_stored_mean():
    st = make(seed=1)
    s = run(st, st.initial_state(), 12, np.random.default_rng(0))
    broken = {**s, "es": base64.b64encode(zlib.compress(b"not a pickle")).decode()}
    rng = np.random.default_rng(1)
    out = s
    for n in range(s["popsize"]):
        d = st.decide(broken, {}, rng)
        out = broken = st.apply(broken, [event(d, -1.0, 50 + n)])
    assert out["generation"] == s["generation"] + 1
    assert_valid_section(st, out)


# --- decisions, feedback, deadlines, restarts -------------------------------------------------------


def test_decide_prefers_fewest_scores_and_explore_false_serves_the_mean():
    st = make(seed=0)
    s = st.initial_state()
    first = st.decide(s, {}, np.random.default_rng(0))
    s = st.apply(s, [event(first, 1.0, 0)])
    rng = np.random.default_rng(1)
    picks = {st.decide(s, {}, rng).info["candidate"] for _ in range(60)}
    assert first.info["candidate"] not in picks and len(picks) == s["popsize"] - 1
    d = st.decide(s, {}, rng)
    assert d.sticky and d.choice == s["points"][d.info["candidate"]] and d.info["generation"] == 0
    mean = C.CMAES("k", st.config.model_copy(update={"explore": False})).decide(s, {}, rng)
    assert mean.choice == st.served(s) and "candidate" not in mean.info


def test_bounds_are_respected_when_the_optimum_is_outside():
    st = make(seed=4)
    s = st.initial_state()
    rng = np.random.default_rng(0)
    for n in range(300):
        d = st.decide(s, {}, rng)
        assert all(0.0 <= v <= 1.0 for v in d.choice.values())
        s = st.apply(s, [event(d, -sphere(d.choice, {"a": 1.5, "b": -0.5, "c": 0.5}), n)])
    assert all(0.0 <= v <= 1.0 for v in st.served(s).values())
    assert st.served(s)["a"] > 0.9 and st.served(s)["b"] < 0.1


def test_old_generation_dropped_and_unusable_events_skipped():
    st = make(seed=0)
    s0 = st.initial_state()
    old = st.decide(s0, {}, np.random.default_rng(0))
    s1 = run(st, s0, s0["popsize"], np.random.default_rng(1))
    assert s1["generation"] == 1
    good = st.decide(s1, {}, np.random.default_rng(2))
    alien = Decision(strategy="k", choice={"a": 0.1}, info={"generation": 1, "candidate": 0})
    s2 = st.apply(s1, [event(old, 1.0, 1), event(None, 1.0, 2), event(good, "high", 3),
                       event(good, float("nan"), 4), event(alien, 1.0, 5), event(good, 2.5, 6)])
    assert (s2["dropped"], s2["skipped"]) == (2, 3)
    assert s2["scores"][good.info["candidate"]] == [2.5] and s2["evaluations"] == s0["popsize"] + 1


def test_scores_of_one_candidate_are_averaged_and_repeats_wait():
    st = make(seed=0, repeats=2)
    s = st.initial_state()
    evs = []
    for i, p in enumerate(s["points"]):
        d = Decision(strategy="k", choice=p, info={"generation": 0, "candidate": i})
        evs += [event(d, float(i), 2 * i), event(d, float(i) + 2, 2 * i + 1)]
    half = st.apply(s, evs[::2])
    assert half["generation"] == 0  # one score each: still waiting for the second
    s = st.apply(s, evs)
    assert s["generation"] == 1 and s["best"]["value"] == len(s["points"]) - 1 + 1.0


def test_deadline_is_judged_by_event_ts():
    st = make(seed=0, deadline_seconds=60)
    s = st.initial_state()
    mu = s["popsize"] // 2
    dec = [Decision(strategy="k", choice=p, info={"generation": 0, "candidate": i}) for i, p in enumerate(s["points"])]
    few = st.apply(s, [event(dec[i], 1.0, i, ts=1000 + i) for i in range(mu - 1)] + [event(None, 0, 9, ts=5000)])
    assert few["generation"] == 0 and few["asked_ts"] == 1000  # too few scored: stays open past the deadline
    early = st.apply(s, [event(dec[i], float(i), i, ts=1000 + i) for i in range(mu)])
    assert early["generation"] == 0  # enough scores, but within the deadline
    late = st.apply(early, [event(None, 0, 99, ts=1061)])  # any later event closes it
    assert late["generation"] == 1 and late["asked_ts"] == 1061 and late["best"]["value"] == mu - 1
    assert late["skipped"] == 1


def test_restart_after_stall_from_the_best_point():
    st = make(seed=0, restart_after=3, popsize=4, restart_popsize_factor=2)
    worse = iter(range(1000))  # every score is worse than the one before: the best never improves
    s = run(st, st.initial_state(), 4 * 5, np.random.default_rng(0), f=lambda p: next(worse))
    assert s["restarts"] == 1 and s["popsize"] == 8 and s["stall"] == 0
    assert s["sigma"] == pytest.approx(st.config.sigma0, rel=1e-6)
    assert s["mean"] == pytest.approx(s["best"]["x"])
    assert_valid_section(st, s)


def test_other_dimensions_start_afresh():
    st = make(seed=0)
    s = run(st, st.initial_state(), 20, np.random.default_rng(0))
    other = make(names=["a", "b"], seed=0)
    assert other.apply(s, [])["names"] == ["a", "b"] and other.kpis(s)["generation"] == 0


# --- end to end -------------------------------------------------------------------------------------

PROBE = '''
from ratchet import hookimpl
from ratchet.runner.context import RunContext


@hookimpl
def ratchet_register_runner_tools(register, workspace):
    def evaluate(conversation_id: str, run: RunContext) -> dict:
        """Return the point this call was served with."""
        return dict(run.params["point"])

    register(evaluate)
'''


def configure(ws_path, strategy: str, every_events: int = 0) -> None:
    """Use the probe tool plus ``strategy`` (the body of one [[tuner.strategies]] table)."""
    (ws_path / "plugins" / "probe.py").write_text(PROBE)
    toml = ws_path / "ratchet.toml"
    text = toml.read_text().replace('plugins = ["plugins/support_desk.py"]',
                                    'plugins = ["plugins/support_desk.py", "plugins/probe.py"]')
    text = re.sub(r"\[\[tuner\.strategies\]\].*?(?=\[tuner\.promotion\])",
                  lambda _: f"[[tuner.strategies]]\n{strategy}\n", text, flags=re.S)
    toml.write_text(text.replace("every_events = 50", f"every_events = {every_events}"))
    commit_all(ws_path)


def quad5(point, rng):
    return -10 * sphere(point, OPT5) + float(rng.normal(0, 0.05))


CMA5 = ('key = "point"\nstrategy = "cmaes"\nparam = "point"\nseed = 1\n'
        'dimensions = {' + ", ".join(f"{n} = {{low = 0.0, high = 1.0}}" for n in OPT5) + "}")


def test_reaches_target_on_noisy_quadratic_through_runner_and_tuner(ws_path):
    from ratchet.core.workspace import Workspace
    from ratchet.runner.service import Runner
    from ratchet.tuner.service import Tuner

    configure(ws_path, CMA5)
    ws = Workspace.open(ws_path)
    runner, tuner = Runner(ws, source="staging", seed=0), Tuner(ws)  # serve staging: no promotions needed
    rng = np.random.default_rng(0)
    for n in range(400):
        point = runner.call("evaluate", {"conversation_id": f"q{n}"})
        tuner.feedback("score", {"conversation_id": f"q{n}", "value": quad5(point, rng)})
        tuner.apply_pending()
        runner.reload_if_changed()
        if sphere(tuner.strategies["point"].served(ws.state.read("staging").document["strategies"]["point"]),
                  OPT5) < 0.005:
            break
    section = ws.state.read("staging").document["strategies"]["point"]
    assert sphere(tuner.strategies["point"].served(section), OPT5) < 0.005, tuner.status()["strategies"]
    assert section["evaluations"] == n + 1 and section["generation"] > 5
    assert_valid_section(tuner.strategies["point"], section)


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

    configure(ws_path, CMA5.replace("seed = 1", "seed = 2\npopsize = 6"))
    ws = Workspace.open(ws_path)
    runner = Runner(ws, seed=0)
    rng = np.random.default_rng(1)
    served, n = [], 0
    async with Client(runner_server(runner)) as rc, Client(tuner_server(Tuner(ws))) as tc:
        for rounds in range(1, 25):  # a round: 6 calls scored, then a promotion
            batch = []
            for _ in range(6):
                _, point = await _call(rc, "evaluate", {"conversation_id": f"m{n}"})
                batch.append({"conversation_id": f"m{n}", "value": quad5(point, rng)})
                n += 1
            err, ack = await _call(tc, "score", batch[0])
            assert not err and ack["accepted"] == 1
            err, ack = await _call(tc, "score_batch", {"events": batch[1:]})
            assert not err and ack["accepted"] == 5
            with anyio.fail_after(10):
                while (await _call(tc, "status"))[1]["unapplied_events"]:
                    await anyio.sleep(0.02)
            err, outcome = await _call(tc, "promote")
            assert not err and outcome["promoted"], outcome
            runner.reload_if_changed()
            _, status = await _call(tc, "status")
            served.append(sphere(status["strategies"]["point"]["served"], OPT5))
            if status["strategies"]["point"]["kpis"]["generation"] >= 6:
                break
    kpis = status["strategies"]["point"]["kpis"]
    assert kpis["generation"] >= 6 and kpis["evaluations"] + kpis["dropped"] == n == 6 * rounds
    assert served[-1] < sphere({k: 0.5 for k in OPT5}, OPT5) / 2  # the mean moved towards the optimum
    assert ws.versions.latest().name == f"v0.1.{rounds}"
    assert ws.state.read("active").document == ws.state.read("staging").document


@pytest.mark.anyio
@pytest.mark.parametrize("tool, args, field", [
    ("score", {"value": 1}, "conversation_id"),
    ("score", {"conversation_id": "m0"}, "value"),
    ("score", {"conversation_id": "m0", "value": "high"}, "value"),
    ("score", {"conversation_id": 3, "value": 1}, "conversation_id"),
    ("score", {"conversation_id": "m0", "value": 1, "weight": 2}, "weight"),
    ("score", {"conversation_id": "m0", "value": 1, "event_id": 7}, "event_id"),
    ("score", {"conversation_id": "ghost", "value": 1}, "conversation_id"),
    ("score_batch", {}, "events"),
    ("score_batch", {"events": "all"}, "events"),
    ("score_batch", {"events": [{"conversation_id": "m0", "value": 1}, {"conversation_id": "m0"}]},
     "events[1].value"),
    ("score_batch", {"events": [{"conversation_id": "m0", "value": 1, "extra": 1}]}, "events[0].extra"),
    ("score_batch", {"events": [{"conversation_id": "m0", "value": 1}], "more": 1}, "more"),
])
async def test_bad_feedback_names_the_field_and_stores_nothing(ws_path, tool, args, field):
    from ratchet.core.workspace import Workspace
    from ratchet.runner.service import Runner
    from ratchet.tuner.server import build_server as tuner_server
    from ratchet.tuner.service import Tuner

    configure(ws_path, CMA5)
    ws = Workspace.open(ws_path)
    Runner(ws, seed=0).call("evaluate", {"conversation_id": "m0"})
    async with Client(tuner_server(Tuner(ws))) as tc:
        is_error, text = await _call(tc, tool, args)
    assert is_error and field in text
    assert ws.store.last_feedback_seq() == 0

# --- choice_probabilities (off-policy evaluation) ----------------------------------------------------


def test_cmaes_probabilities_are_uniform_over_the_fewest_scored_candidates():
    st = make(seed=0)
    s = st.initial_state()
    probs = agrees_with_decide(st, s, {}, n=2000)
    assert len(probs) == s["popsize"] and list(probs.values()) == [pytest.approx(1 / s["popsize"])] * s["popsize"]
    first = st.decide(s, {}, np.random.default_rng(0))
    s = st.apply(s, [event(first, 1.0, 0)])
    probs = agrees_with_decide(st, s, {}, n=2000)
    assert choice_key(first.choice) not in probs and len(probs) == s["popsize"] - 1
    mean = C.CMAES("k", st.config.model_copy(update={"explore": False}))
    d = mean.decide(s, {}, np.random.default_rng(0))
    assert d.propensity == 1.0  # deterministic: logged as propensity 1
    assert mean.choice_probabilities(s, {}, np.random.default_rng(0)) == {choice_key(st.served(s)): 1.0}


def test_cmaes_a_new_generation_is_not_judged_by_the_old_ones_log():
    """The log holds the points of generation 0; a state at generation 1 serves only new points: nothing to
    judge, and the refusal says so. The same generation is judged (here: equal to the logged mean)."""
    st = make(seed=0, popsize=4, repeats=1)
    s0 = st.initial_state()
    rng = np.random.default_rng(0)
    calls, events = [], []
    for n in range(40):
        d = st.decide(s0, {}, rng)
        v = -sum((x - 0.3) ** 2 for x in d.choice.values())
        calls.append(LoggedCall(choice_key(d.choice), d.propensity, v))
        events.append(event(d, v, n))
    logged = list(dict.fromkeys(c.choice for c in calls))
    same = evaluate(calls, logged, lambda f: st.choice_probabilities(s0, {}, rng))
    assert same.estimates["snips"].value == pytest.approx(same.observed.value)
    s1 = st.apply(s0, events)
    assert s1["generation"] >= 1
    with pytest.raises(OPEError) as err:
        evaluate(calls, logged, lambda f: st.choice_probabilities(s1, {}, rng))
    assert "no logged call made" in err.value.message and err.value.field == "candidate"


def test_the_decision_log_holds_cmaes_propensities_and_scores_are_its_rewards(ws_path):
    """Through the runner and the tuner: each decision is logged with its propensity (1 / popsize while no
    candidate has a score), the ``score`` events are the rewards off-policy evaluation reads, and the active
    state, judged on its own log, gets what was observed."""
    from ratchet.core import evaluation as ev
    from ratchet.core.workspace import Workspace
    from ratchet.runner.service import Runner
    from ratchet.tuner.service import Tuner

    configure(ws_path, CMA5.replace("seed = 1", "seed = 1\npopsize = 6\nrepeats = 50"))
    ws = Workspace.open(ws_path)
    runner, tuner = Runner(ws, seed=0), Tuner(ws)  # serves active: one generation throughout
    rng = np.random.default_rng(0)
    for n in range(60):
        point = runner.call("evaluate", {"conversation_id": f"q{n}"})
        tuner.feedback("score", {"conversation_id": f"q{n}", "value": quad5(point, rng)})
    assert ws.store.decisions_for("q0")[0]["propensity"] == pytest.approx(1 / 6)
    assert ev.reward_tools(ws, "point") == ["reward", "score"]
    calls = ev.logged_calls(ws, "point")
    assert len(calls) == 60 and all(c.propensity == pytest.approx(1 / 6) for c in calls)
    result = ev.evaluate_candidate(ws, ev.state_candidate(ws, "active"), "point", calls)
    assert result.estimates["snips"].value == pytest.approx(result.observed.value)
    assert result.estimates["ips"].value == pytest.approx(result.observed.value) and result.unobserved == 0
