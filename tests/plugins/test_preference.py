"""The preference strategy (Bradley–Terry): contract, fit, uncertainty, tools, and end to end on fixed seeds."""

from __future__ import annotations

import copy
import json

import anyio
import jsonschema
import numpy as np
import pytest
from mcp import Client
from pydantic import ValidationError
from scipy.stats import kendalltau

from helpers import agrees_with_decide, assert_valid_section, call_tool, set_strategy
from ratchet.core.errors import ConfigError
from ratchet.core.strategy import Decision, FeedbackEvent, Strategy
from ratchet.plugins.tuner_strategies import preference as P
from ratchet.runner.server import build_server as runner_server
from ratchet.runner.service import Runner
from ratchet.tuner.server import build_server as tuner_server
from ratchet.tuner.service import Tuner

STYLES = ["concise", "friendly", "detailed", "formal"]


def make(variants=STYLES, **kw):
    return P.Preference("k", P.Preference.Config(variants=list(variants), **kw))


def by_name(w, l, n=0):
    return FeedbackEvent(event_id=f"e{n}", tool="prefer_variants", payload={"winner": w, "loser": l})


def by_conv(w, l, n=0):
    d = {"winner_conversation_id": Decision(strategy="k", choice=w),
         "loser_conversation_id": Decision(strategy="k", choice=l)}
    return FeedbackEvent(event_id=f"e{n}", tool="prefer", conversation_id="cw", decision=d["winner_conversation_id"],
                         payload={"winner_conversation_id": "cw", "loser_conversation_id": "cl"}, joined=d)


def bt_events(variants, theta, n, seed, kind=by_name):
    """n comparisons of uniformly random pairs with outcomes drawn from the Bradley–Terry model."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n):
        i, j = rng.choice(len(variants), 2, replace=False)
        if rng.random() >= 1 / (1 + np.exp(theta[j] - theta[i])):
            i, j = j, i
        out.append(kind(variants[i], variants[j], t))
    return out


# --- contract and config ----------------------------------------------------------------------------


def test_contract_and_initial_state():
    assert issubclass(P.Preference, Strategy) and P.Preference.family == "preference"
    st = make()
    s0 = st.initial_state()
    assert_valid_section(st, s0)
    assert s0 == st.initial_state() and s0 is not st.initial_state()
    assert s0["fit"]["theta"] == [0.0] * 4 and st.served(s0) == "concise"
    seen = []
    P.ratchet_register_strategies(seen.append)
    assert seen == [P.Preference]


@pytest.mark.parametrize("kw, field", [
    ({"variants": ["only"]}, "variants"),
    ({"variants": ["a", "b", "a"]}, "variants"),
    ({"variants": ["a", "b"], "exploration": -1}, "exploration"),
    ({"variants": ["a", "b"], "l2": 0}, "l2"),
    ({"variants": ["a", "b"], "refit_every": 0}, "refit_every"),
    ({"variants": ["a", "b"], "bogus": 1}, "bogus"),
    ({}, "variants"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValidationError) as err:
        P.Preference.Config(**kw)
    assert field in str(err.value)


PREF_STYLES = """
[[tuner.strategies]]
key = "style"
strategy = "preference"
param = "style"
variants = ["concise", "friendly", "detailed", "formal"]
refit_every = 5
"""


def test_config_error_in_ratchet_toml_names_the_key(ws_path):
    from ratchet.core.workspace import Workspace

    set_strategy(ws_path, PREF_STYLES.replace("refit_every = 5", "refit_every = 0"))
    with pytest.raises(ConfigError) as err:
        Tuner(Workspace.open(ws_path))
    assert err.value.field == "tuner.strategies[0].refit_every"


# --- apply: purity, determinism, bookkeeping --------------------------------------------------------


def test_apply_is_pure_deterministic_and_batch_invariant():
    st = make(refit_every=3)
    evs = bt_events(STYLES, [0, 1, 2, 3], 40, seed=0) + bt_events(STYLES, [0, 1, 2, 3], 20, seed=1, kind=by_conv)
    s0 = st.initial_state()
    frozen = copy.deepcopy(s0)
    s1 = st.apply(s0, evs)
    assert s0 == frozen
    assert st.apply(s0, evs) == s1  # deterministic
    one_by_one = s0
    for e in evs:
        one_by_one = st.apply(one_by_one, [e])
    assert one_by_one == s1
    assert_valid_section(st, s1)
    assert s1["n"] == 60 and sum(map(sum, s1["wins"])) == 60 and s1["fit"]["n"] == 60 and s1["since_fit"] == 0
    again = st.apply(s1, [])
    assert again == s1 and again is not s1 and again["wins"] is not s1["wins"]


def test_apply_skips_unusable_events():
    st = make()
    no_join = FeedbackEvent(event_id="x", tool="prefer", payload={}, joined={})
    evs = [by_name("formal", "nope"), by_conv("formal", "zzz"), no_join, by_conv(None, "formal"),
           by_name("formal", "formal"), by_conv("detailed", "detailed")]
    s = st.apply(st.initial_state(), evs)
    assert (s["skipped"], s["same_variant"], s["n"]) == (4, 2, 0)
    assert_valid_section(st, s)


def test_fit_is_the_penalised_mle_with_centred_laplace_errors():
    wins = np.array([[0, 3, 5, 9], [4, 0, 6, 7], [2, 3, 0, 8], [1, 2, 4, 0]])
    theta, se = P.fit_bradley_terry(wins, l2=0.1)
    n = wins + wins.T
    p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))
    grad = (wins - n * p).sum(axis=1) - 0.1 * theta  # gradient of the penalised log-likelihood
    assert np.abs(grad).max() < 1e-4 and abs(theta.sum()) < 1e-9
    assert list(np.argsort(-theta)) == [0, 1, 2, 3]
    # more of the same data: same strengths, errors shrink like 1/sqrt(n)
    theta10, se10 = P.fit_bradley_terry(wins * 100, l2=1e-6)
    assert np.all(se10 < se / 5)
    # no data: zero strengths, the prior's centred sd
    t0, s0 = P.fit_bradley_terry(np.zeros((4, 4)), l2=0.1)
    assert np.all(t0 == 0) and s0 == pytest.approx(np.full(4, np.sqrt(0.75 / 0.1)))


def test_variants_changed_in_config_rekeys_counts():
    st = make(refit_every=1)
    s = st.apply(st.initial_state(), bt_events(STYLES, [0, 1, 2, 3], 50, seed=2))
    new = make(["formal", "concise", "brand_new"])
    s2 = new.apply(s, [])
    assert_valid_section(new, s2)
    assert s2["wins"][0][1] == s["wins"][3][0] and s2["wins"][2] == [0, 0, 0]
    assert s2["n"] == s["wins"][3][0] + s["wins"][0][3] and new.served(s) == "formal"


# --- decide, served, kpis ---------------------------------------------------------------------------


def test_decide_deterministic_with_exact_propensity():
    st = make(refit_every=1)
    s = st.apply(st.initial_state(), bt_events(STYLES, [0, 0.3, 0.6, 0.9], 60, seed=3))
    d1, d2 = st.decide(s, {}, np.random.default_rng(5)), st.decide(s, {}, np.random.default_rng(5))
    assert d1 == d2 and d1.strategy == "k" and d1.choice in STYLES and d1.sticky
    rng = np.random.default_rng(0)
    draws = [st.decide(s, {}, rng) for _ in range(4000)]
    freq = np.array([sum(d.choice == v for d in draws) for v in STYLES]) / 4000
    prop = {d.choice: d.propensity for d in draws}
    assert np.abs(freq - np.array([prop.get(v, 0) for v in STYLES])).max() < 0.03
    fresh = st.decide(st.initial_state(), {}, rng)
    assert fresh.propensity == pytest.approx(0.25)  # no data: uniform


def test_no_exploration_serves_argmax():
    st = make(exploration=0, refit_every=1)
    s = st.apply(st.initial_state(), [by_name("detailed", "formal", n) for n in range(5)])
    d = st.decide(s, {}, np.random.default_rng(0))
    assert d.choice == st.served(s) == "detailed" and d.propensity == 1.0


def test_kpis():
    st = make(refit_every=1)
    s = st.apply(st.initial_state(), bt_events(STYLES, [-1, 0, 1, 2], 400, seed=4))
    k = st.kpis(s)
    assert k["ranking"] == ["formal", "detailed", "friendly", "concise"] and k["best"] == "formal"
    assert k["comparisons"] == k["fitted_on"] == 400
    assert set(k["strengths"]) == set(k["se"]) == set(STYLES) and all(0 < v < 0.5 for v in k["se"].values())
    json.dumps(k)


def test_feedback_tool_schemas():
    tools = {t.name: t for t in make().feedback_tools()}
    assert set(tools) == {"prefer", "prefer_batch", "prefer_variants", "prefer_variants_batch"}
    for t in tools.values():
        jsonschema.Draft202012Validator.check_schema(t.input_schema)
    assert tools["prefer"].join == tools["prefer_batch"].join == ["winner_conversation_id", "loser_conversation_id"]
    assert tools["prefer"].needs_decision and not tools["prefer_variants"].needs_decision
    assert tools["prefer_variants"].join == [] and tools["prefer_variants_batch"].batch_of == "prefer_variants"
    assert tools["prefer_variants"].input_schema["properties"]["winner"]["enum"] == STYLES


# --- through the tuner MCP server -------------------------------------------------------------------


@pytest.fixture
def pref_ws(ws_path):
    from ratchet.core.workspace import Workspace

    set_strategy(ws_path, PREF_STYLES)
    return Workspace.open(ws_path)


BAD = [
    ("prefer", {"loser_conversation_id": "c1"}, "winner_conversation_id"),
    ("prefer", {"winner_conversation_id": "c0"}, "loser_conversation_id"),
    ("prefer", {"winner_conversation_id": 5, "loser_conversation_id": "c1"}, "winner_conversation_id"),
    ("prefer", {"winner_conversation_id": "", "loser_conversation_id": "c1"}, "winner_conversation_id"),
    ("prefer", {"winner_conversation_id": "c0", "loser_conversation_id": "c1", "colour": 1}, "colour"),
    ("prefer", {"winner_conversation_id": "c0", "loser_conversation_id": "c1", "event_id": 5}, "event_id"),
    ("prefer", {"winner_conversation_id": "c0", "loser_conversation_id": "ghost"}, "loser_conversation_id"),
    ("prefer", {"winner_conversation_id": "ghost", "loser_conversation_id": "c1"}, "winner_conversation_id"),
    ("prefer_batch", {"events": "all"}, "events"),
    ("prefer_batch", {"events": [{"winner_conversation_id": "c0", "loser_conversation_id": "c1"},
                                 {"winner_conversation_id": "c0"}]}, "events[1].loser_conversation_id"),
    ("prefer_batch", {"events": [{"winner_conversation_id": "c0", "loser_conversation_id": "c1"},
                                 {"winner_conversation_id": "ghost", "loser_conversation_id": "c1"}]},
     "events[1].winner_conversation_id"),
    ("prefer_variants", {"winner": "shouty", "loser": "formal"}, "winner"),
    ("prefer_variants", {"winner": "formal"}, "loser"),
    ("prefer_variants", {"winner": "formal", "loser": 3}, "loser"),
    ("prefer_variants_batch", {"events": [{"winner": "formal", "loser": "concise"}, {"winner": "formal",
                                                                                    "loser": "x"}]},
     "events[1].loser"),
    ("prefer_variants_batch", {}, "events"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("tool, args, field", BAD, ids=[f"{t}-{f}-{i}" for i, (t, _, f) in enumerate(BAD)])
async def test_bad_feedback_names_the_field_and_stores_nothing(pref_ws, tool, args, field):
    runner = Runner(pref_ws, seed=0)
    for i in range(2):
        runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"c{i}"})
    async with Client(tuner_server(Tuner(pref_ws))) as c:
        is_error, text = await call_tool(c, tool, args)
    assert is_error and field in text, text
    if "ghost" in json.dumps(args):
        assert "unknown conversation 'ghost'" in text
    assert pref_ws.store.last_feedback_seq() == 0


# --- end to end -------------------------------------------------------------------------------------

TRUE_STYLES = {"formal": 1.5, "detailed": 0.5, "friendly": 0.0, "concise": -1.0}
QUESTIONS = ["where is my parcel?", "How long do I have to return an item?", "Do you ship internationally?",
             "How do I cancel my subscription?", "What payment methods do you accept?"]


@pytest.mark.anyio
async def test_end_to_end_styles_through_the_servers(pref_ws):
    """Serve styles over MCP, compare served conversations, promote over MCP, and serve the winner."""
    runner, tuner, rng = Runner(pref_ws, seed=11), Tuner(pref_ws), np.random.default_rng(11)
    async with Client(runner_server(runner)) as rc, Client(tuner_server(tuner)) as tc:
        served = {}
        for i in range(200):
            r = await rc.call_tool("answer", {"question": QUESTIONS[i % 5], "conversation_id": f"c{i}"})
            served[f"c{i}"] = r.structured_content["style"]
        assert set(served.values()) == set(STYLES)  # a fresh section explores every style
        assert pref_ws.store.decisions_for("c0")[0]["propensity"] == pytest.approx(0.25)
        ids = list(served)
        rng.shuffle(ids)
        events = []
        for a, b in zip(ids[::2], ids[1::2]):
            if rng.random() >= 1 / (1 + np.exp(TRUE_STYLES[served[b]] - TRUE_STYLES[served[a]])):
                a, b = b, a
            events.append({"winner_conversation_id": a, "loser_conversation_id": b})
        is_error, ack = await call_tool(tc, "prefer_batch", {"events": events})
        assert not is_error and ack["accepted"] == 100
        is_error, outcome = await call_tool(tc, "promote")
        assert not is_error and outcome["promoted"], outcome
        _, status = await call_tool(tc, "status")
        kpis = status["strategies"]["style"]["kpis"]
        same = sum(served[e["winner_conversation_id"]] == served[e["loser_conversation_id"]] for e in events)
        assert kpis["comparisons"] + kpis["same_variant"] == 100 and kpis["same_variant"] == same
        assert kpis["ranking"] == ["formal", "detailed", "friendly", "concise"]
        assert status["strategies"]["style"]["served"] == "formal"
        with anyio.fail_after(5):  # the runner server hot-reloads the promoted state
            while runner.snapshot.version != outcome["version"]:
                await anyio.sleep(0.05)
        after = [(await rc.call_tool("answer", {"question": QUESTIONS[i % 5], "conversation_id": f"n{i}"})
                  ).structured_content["style"] for i in range(60)]
    assert after.count("formal") > 30


VARIANTS_PLUGIN = '''
from ratchet import hookimpl
from ratchet.runner.context import RunContext


@hookimpl
def ratchet_register_runner_tools(register, workspace):
    def pick(conversation_id: str, run: RunContext) -> dict:
        """The variant this conversation is served."""
        return {"variant": run.params["variant"]}
    register(pick)
'''


@pytest.mark.anyio
async def test_end_to_end_recovers_ranking_of_eight_variants(ws_path):
    """1,000 comparisons: 300 between conversations the runner served, 700 named; Kendall tau >= 0.8."""
    from ratchet.core.workspace import Workspace

    names = [f"v{i}" for i in range(8)]
    truth = dict(zip(names, np.random.default_rng(8).permutation(np.linspace(-1.5, 1.5, 8))))
    (ws_path / "plugins" / "variants.py").write_text(VARIANTS_PLUGIN)
    schema = json.loads((ws_path / "state" / "schema.json").read_text())
    schema["properties"]["params"]["properties"]["variant"] = {"enum": names}
    (ws_path / "state" / "schema.json").write_text(json.dumps(schema, indent=2))
    set_strategy(ws_path, f'[[tuner.strategies]]\nkey = "variant"\nstrategy = "preference"\nparam = "variant"\n'
                          f'variants = {json.dumps(names)}\n',
                 plugins=["plugins/support_desk.py", "plugins/variants.py"])
    ws = Workspace.open(ws_path)
    runner, tuner, rng = Runner(ws, seed=3), Tuner(ws), np.random.default_rng(3)

    def outcome(a, b, variant=lambda x: x):  # (winner, loser) drawn from the Bradley–Terry model
        p = 1 / (1 + np.exp(truth[variant(b)] - truth[variant(a)]))
        return (a, b) if rng.random() < p else (b, a)

    served = {f"c{i}": runner.call("pick", {"conversation_id": f"c{i}"})["variant"] for i in range(800)}
    ids = list(served)
    rng.shuffle(ids)
    pairs = [outcome(a, b, served.get) for a, b in zip(ids[::2], ids[1::2]) if served[a] != served[b]][:300]
    assert len(pairs) == 300
    tuner.feedback("prefer_batch", {"events": [{"winner_conversation_id": w, "loser_conversation_id": l}
                                               for w, l in pairs]})
    named = [outcome(*rng.choice(names, 2, replace=False)) for _ in range(700)]
    tuner.feedback("prefer_variants_batch", {"events": [{"winner": str(w), "loser": str(l)} for w, l in named]})
    assert tuner.apply_pending() == 1000
    result = await tuner.promote()
    assert result["promoted"], result
    kpis = tuner.status()["strategies"]["variant"]["kpis"]
    assert kpis["comparisons"] == 1000
    tau = kendalltau([kpis["strengths"][v] for v in names], [truth[v] for v in names]).statistic
    assert tau >= 0.8, (tau, kpis["ranking"])
    best = max(truth, key=truth.get)
    assert kpis["best"] == best
    runner.reload_if_changed()
    picks = [runner.call("pick", {"conversation_id": f"after{i}"})["variant"] for i in range(100)]
    assert max(set(picks), key=picks.count) == best

# --- choice_probabilities (off-policy evaluation) ----------------------------------------------------


def test_preference_probabilities_match_its_draws_and_propensities():
    st = make(refit_every=1)
    s = st.apply(st.initial_state(), bt_events(STYLES, [0, 0.3, 0.6, 0.9], 60, seed=3))
    probs = agrees_with_decide(st, s, {}, n=4000)
    assert max(probs, key=probs.get) == "formal" and all(p > 0 for p in probs.values())
    assert st.choice_probabilities(st.initial_state(), {}, np.random.default_rng(0)) == {
        v: pytest.approx(0.25) for v in STYLES}
    greedy = P.Preference("k", st.config.model_copy(update={"exploration": 0.0}))
    assert agrees_with_decide(greedy, s, {}, n=200) == {"concise": 0.0, "friendly": 0.0, "detailed": 0.0, "formal": 1.0}
