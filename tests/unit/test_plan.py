"""exporter plan: exact byte counts, the choice and its Pareto front, mixed-precision recipes, the CLI's JSON."""

from __future__ import annotations

import json
import re

import pytest

from exporter.artifact import DimsRecord
from exporter.build.candidates import candidate_recipes, count_bytes
from exporter.build.recipes import Recipe, apply_recipe, parse_label
from exporter.cli import main
from exporter.planner import Row, choose, kv_cache_bytes, pareto_front, predict, Efficiency, ModelShape
from exporter.profiles import load_profile

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
        "of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
        "the rightful property of some one or other of their daughters. ") * 6


@pytest.fixture(scope="module")
def tiny_lm(tiny_models):
    from exporter.build.model import build_static_lm
    from exporter.build.source import load_model, resolve_source

    return build_static_lm(load_model(resolve_source(str(tiny_models["llama"]))), 32)


def _expected(shape: tuple[int, int], bits: int, group: int, scale_bytes: int) -> int:
    rows, cols = shape
    groups = cols // group if group else 1
    return rows * cols * bits // 8 + rows * groups * scale_bytes


@pytest.mark.parametrize("label", ["8da4w-g32+emb4w-g64", "8da4w-pc+emb8w+out8w", "8da8w+emb8w", "8da4w-g32+l8-1"])
def test_weight_bytes_are_exact(tiny_lm, label):
    import copy

    import torch

    recipe = parse_label(label)
    lm = copy.deepcopy(tiny_lm)
    apply_recipe(lm, recipe)
    got = count_bytes(lm, context=64)
    spec = lm.spec

    def linear(shape, layer=None, out=False):
        if out and recipe.output == "8w" or layer in recipe.layers_8bit or recipe.linear == "8da8w":
            return _expected(shape, 8, 0, 4)
        g = recipe.group_size
        return _expected(shape, 4, g, 2 if g else 4)

    h, kv = spec.hidden, spec.n_kv_heads * spec.head_dim
    body = sum(linear(s, i) for i in range(spec.n_layers)
               for s in [(h, h), (kv, h), (kv, h), (h, h), (spec.intermediate, h), (spec.intermediate, h),
                         (h, spec.intermediate)])
    assert got.body == body
    assert got.output == linear((spec.vocab, h), out=True)
    emb_bits = {"4w": 4, "8w": 8, "none": 32}[recipe.embedding]
    assert got.embedding == _expected((spec.vocab, h), emb_bits, recipe.embedding_group_size, 4 if emb_bits < 32 else 0)
    # Identical constants are stored once (ExecuTorch dedupes them by content): the untrained norms are all
    # ones, and every norm's mean_row is the same 1/hidden row.
    norms = 4 * h
    rope_row = 2 * spec.head_dim * 4  # cos and sin of one position
    shared = 4 * h + 4 * spec.head_dim ** 2  # one mean_row and the rotate-half matrix
    assert got.other == norms + shared
    assert got.rope == 64 * rope_row  # stored at the asked context (64), not the model's 32
    assert got.total == got.embedding + body + got.output + norms + shared + 64 * rope_row
    emb_row = _expected((1, h), emb_bits, recipe.embedding_group_size, 4 if emb_bits < 32 else 0)
    # a decode step reads every linear and constant, but one embedding row and one RoPE position
    assert got.read_per_token == body + got.output + norms + shared + emb_row + rope_row
    assert got.at_context(8).read_per_token == got.read_per_token and got.at_context(8).rope == 8 * rope_row
    assert isinstance(lm.lm_head.weight, torch.Tensor)


def test_bytes_read_follow_the_recipe_and_leave_the_kv_cache_out(tiny_models, tiny_lm):
    import copy

    from exporter.build.model import build_static_lm
    from exporter.build.source import load_model, resolve_source

    def read(label, lm=tiny_lm):
        lm = copy.deepcopy(lm)
        apply_recipe(lm, parse_label(label))
        return count_bytes(lm, context=32).read_per_token

    vocab, h = tiny_lm.spec.vocab, tiny_lm.spec.hidden
    # an 8-bit output layer: a byte per weight and an fp32 scale per row instead of nibbles and bf16 per 32
    assert read("8da4w-g32+emb4w-g64+out8w") - read("8da4w-g32+emb4w-g64") == \
        vocab * h // 2 + 4 * vocab - 2 * vocab * (h // 32)
    # an 8-bit embedding moves the number by one row's difference only
    assert read("8da4w-g32+emb8w") - read("8da4w-g32+emb4w-g64") == (h + 4) - (h // 2 + 4 * (h // 64))
    # an int8 KV cache's codes, scales and zero points are buffers the runtime plans, not weights
    int8_kv = build_static_lm(load_model(resolve_source(str(tiny_models["llama"]))), 32, "int8")
    assert read("8da4w-g32+emb4w-g64", int8_kv) == read("8da4w-g32+emb4w-g64")


def test_mixed_precision_recipe_keeps_its_layers_at_8_bits(tiny_lm):
    import copy

    import torch

    recipe = parse_label("8da4w-g32+emb4w-g64+l8-1")
    assert recipe.layers_8bit == (1,) and recipe.label() == "8da4w-g32+emb4w-g64+l8-1"
    lm = copy.deepcopy(tiny_lm)
    apply_recipe(lm, recipe, importance={})
    assert lm.layers[1].mlp.up_proj.weight.target_dtype == torch.int8
    assert lm.layers[0].mlp.up_proj.weight.target_dtype == torch.int4
    assert lm.lm_head.weight.target_dtype == torch.int4


@pytest.mark.parametrize("fields, message", [
    ({"linear": "8da8w", "group_size": 0, "layers_8bit": (1,)}, "only a 4-bit linear scheme"),
    ({"layers_8bit": (3, 1)}, "distinct layer numbers"),
])
def test_bad_layers_8bit(fields, message):
    from exporter.errors import RecipeError

    with pytest.raises(RecipeError, match=message):
        parse_label("8da4w-g32").replace_checked(**fields)


def test_candidates_cover_the_issue_list():
    base = load_profile("sm8650").recipe
    labels = [r.label() for r in candidate_recipes(base, [5, 2, 7, 1, 0, 3, 4, 6, 8, 9, 10, 11])]
    assert len(labels) == len(set(labels)) >= 6
    for want in ("8da4w-g32+emb4w-g64", "8da4w-g128+emb4w-g64", "8da4w-pc+emb4w-g64", "8da8w+emb8w",
                 "8da4w-g32+emb8w", "8da4w-g32+emb4w-g64+out8w", "8da4w-g32+emb4w-g64+l8-5"):
        assert want in labels
    odd = Recipe.make(linear="4w", group_size=256, embedding="none", embedding_group_size=0, output="linear")
    assert candidate_recipes(odd, [0])[0] == odd  # the profile's own recipe is always weighed


def _row(label, *, fits=True, ppl=25.0, tps=100.0, bound=0.25, base=22.0):
    inc = ppl / base - 1
    return Row(label, {}, {"total": 1}, {"perplexity": ppl}, 1, fits, inc, inc <= bound, tps, 10.0)


def test_choice_is_the_fastest_that_fits_and_meets_the_bound():
    rows = [_row("small-bad", ppl=30.0, tps=200), _row("big", fits=False, ppl=23.0, tps=150),
            _row("fast", ppl=26.0, tps=140), _row("slow", ppl=22.5, tps=90)]
    reason = choose(rows, bound=0.25, budget=10**9)
    chosen = [r for r in rows if r.chosen]
    assert [r.label for r in chosen] == ["fast"] and "fastest" in reason
    verdicts = {r.label: r.verdict for r in rows}
    assert verdicts["small-bad"].startswith("over the quality bound")
    assert verdicts["big"].startswith("too big")
    assert verdicts["slow"].startswith("slower")
    assert chosen[0].pareto  # the choice is on the front of the candidates that fit
    assert not rows[1].pareto  # the one that does not fit is not on it


def test_speed_ties_go_to_the_more_accurate_candidate():
    rows = [_row("emb4", ppl=26.0, tps=100.0), _row("emb8", ppl=25.0, tps=99.0)]
    choose(rows, bound=0.25, budget=1)
    assert [r.label for r in rows if r.chosen] == ["emb8"]
    assert rows[0].verdict.startswith("less accurate")


def test_nothing_within_the_bound_takes_the_most_accurate_that_fits():
    rows = [_row("a", ppl=40.0, tps=100), _row("b", ppl=35.0, tps=50), _row("c", fits=False, ppl=30.0, tps=10)]
    reason = choose(rows, bound=0.05, budget=1)
    assert [r.label for r in rows if r.chosen] == ["b"] and "no candidate stays within" in reason


def test_nothing_fits_is_a_model_error():
    from exporter.errors import ModelError

    with pytest.raises(ModelError, match="no candidate fits"):
        choose([_row("a", fits=False)], bound=0.25, budget=1)


def test_pareto_front():
    assert pareto_front([(10, 5), (20, 6), (15, 7), (20, 6)]) == [True, True, False, True]


def test_predictions_follow_bandwidth_memory_and_kernels():
    dims = DimsRecord(hidden=576, n_heads=9, n_kv_heads=3, head_dim=64, intermediate=1536, windows=(None,) * 30)
    shape = ModelShape(dims, vocab=49152, body_params=106_168_320)
    assert ModelShape.from_dict(json.loads(json.dumps(shape.to_dict()))) == shape  # as the plan cache keeps it
    weights = {"total": 92_000_000, "read_per_token": 76_000_000}
    recipe = parse_label("8da4w-g32+emb4w-g64")
    eff = Efficiency(0.5, 0.3, "test")
    fast, slow = load_profile("sm8650"), load_profile("sm6450")
    p_fast = predict(fast, shape, weights, recipe, 1024, eff)
    p_slow = predict(slow, shape, weights, recipe, 1024, eff)
    per_token = 76_000_000 + kv_cache_bytes(shape, 512, recipe)
    assert p_fast.decode_tps == pytest.approx(0.5 * 76.8e9 / per_token)
    assert p_fast.decode_tps / p_slow.decode_tps == pytest.approx(76.8 / 22.0)
    assert fast.kernel_level == "i8mm" and slow.kernel_level == "dotprod"
    assert p_fast.prefill_tps > 2 * p_slow.prefill_tps  # i8mm doubles the MACs per cycle, and more cores
    assert p_fast.memory_bytes > 92_000_000 + kv_cache_bytes(shape, 1024, recipe)  # plus activations
    assert p_fast.fits and p_fast.budget_bytes == int(12e9 * 0.25)


def test_efficiency_from_bench_results():
    from exporter.planner import efficiency

    prof = load_profile("sm8650")
    assert efficiency(prof, []).source == "profile (assumed)"
    rows = [{"profile": "sm8650", "decode_tps": 200.0, "pte_bytes": 92_000_000, "prefill_tps": 0, "parameters": 1},
            {"profile": "sm6450", "decode_tps": 1.0, "pte_bytes": 1}]
    eff = efficiency(prof, rows)
    assert eff.decode == pytest.approx(200 * 92e6 / 76.8e9) and eff.prefill == prof.planning.prefill_efficiency
    assert "measured (1 bench" in eff.source


def test_results_store_round_trip(tmp_path, monkeypatch):
    from exporter.results import load_results, record_bench_rows

    monkeypatch.setenv("EXPORTER_CACHE_DIR", str(tmp_path))
    ok = {"status": "ok", "host": False, "emulated": False, "profile_id": "sm8650", "pte_bytes": 5,
          "decode_tps_mean": 10.0, "prefill_tps_mean": 50.0}
    n = record_bench_rows([ok, {**ok, "host": True}, {**ok, "status": "failed"}], parameters=7)
    assert n == 1
    (tmp_path / "results" / "sm8650.jsonl").open("a").write("not json\n")
    got = load_results("sm8650")
    assert len(got) == 1 and got[0]["decode_tps"] == 10.0 and got[0]["parameters"] == 7


# ------------------------------------------------------------------------------------------------------ CLI


def _run(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_plan_json_and_plot(tiny_models, tmp_path, monkeypatch, capfd):
    """capfd, not capsys: what ExecuTorch's C++ ops write straight to file descriptor 2 must not show either."""
    monkeypatch.setenv("EXPORTER_CACHE_DIR", str(tmp_path / "cache"))
    text = tmp_path / "eval.txt"
    text.write_text(TEXT)
    png = tmp_path / "plan.png"
    args = ["plan", "--device", "sm8650", "--model", str(tiny_models["llama"]), "--text", str(text),
            "--chunks", "2", "--chunk-len", "24", "--max-seq-len", "64", "--plot", str(png), "--json"]
    code, out, err = _run(capfd, args)
    assert code == 0
    native = [ln for ln in err.splitlines() if re.match(r"^\[\w+\.(cpp|h):\d+\]", ln)]
    assert native == []  # ExecuTorch's C++ log lines are behind -v
    doc = json.loads(out)
    assert len(doc["candidates"]) >= 6 and not doc["cached"]
    for c in doc["candidates"]:
        assert {"label", "weights", "memory_bytes", "fits", "quality", "decode_tps", "prefill_tps", "pareto",
                "verdict"} <= set(c)
        assert c["weights"]["total"] > 0 and c["quality"]["perplexity"] > 0
    chosen = [c for c in doc["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["pareto"] and chosen[0]["label"] == doc["chosen"]
    assert doc["evaluation"]["disjoint"].startswith("checked")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    code, out, _ = _run(capfd, args[:-3] + ["--json"])  # the second run reuses the measurements
    assert code == 0 and json.loads(out)["cached"]


@pytest.mark.parametrize("args, code", [
    (["--device", "sm9999"], 3),
    (["--device", "sm8650", "--text", "/nonexistent.txt"], 2),
    (["--device", "sm8650", "--chunk-len", "1"], 2),
])
def test_cli_plan_bad_input(args, code, capsys):
    got, out, err = _run(capsys, ["plan", *args, "--json"])
    assert got == code and not out and "error" in err.lower()


def test_candidates_share_the_fp32_model_and_measure_as_a_full_copy_would(tiny_lm):
    import copy

    import torch

    from exporter.build.evaluate import EagerEvaluator

    ids = [(7 * i + 3) % 200 + 2 for i in range(32)]  # the tiny decoder holds 32 positions
    lm = copy.deepcopy(tiny_lm)
    ev = EagerEvaluator(lm, importance={}, chunks=[ids[:16], ids[16:]], calibration=ids)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    for label in ("8da4w-g32+emb4w-g64+l8-1", "8da8w+emb8w+out8w"):
        recipe = parse_label(label)
        got = ev.measure(recipe, context=0)
        full = copy.deepcopy(lm)  # what every candidate used to be
        apply_recipe(full, recipe, ev.importance, ev.scales)
        assert got.quality == ev._quality(full) and got.weights == count_bytes(full, 0)
        # quantizing the copy replaced its weights and left the shared fp32 model as it was
        after = lm.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith(("k_cache", "v_cache")))
    assert ev._quality(lm) == ev.unquantized
