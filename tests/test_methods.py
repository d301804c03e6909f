"""The methods table (videoprune.methods): one name -> one config, validated in one place."""

import ast
from pathlib import Path

import pytest

from videoprune import EVSConfig
from videoprune.methods import DEFAULT_RATE, METHODS, get_method, method_names, uniform_frames
from videoprune.stts import STTSConfig


def test_evs_methods_build_the_documented_configs():
    """Each EVS method name sets exactly its criterion/stage beside the rate."""
    assert get_method("evs").config(rate=0.5) == EVSConfig(rate=0.5)
    assert get_method("evs-pixel").config(rate=0.5) == EVSConfig(rate=0.5, criterion="pixel")
    assert get_method("evs-pre").config(rate=0.5) == EVSConfig(rate=0.5, criterion="pixel", stage="pre_encoder")
    assert get_method("random").config(rate=0.5, seed=3) == EVSConfig(rate=0.5, criterion="random", seed=3)
    assert get_method("evs-threshold").config(threshold=0.2) == EVSConfig(threshold=0.2)


def test_rate_defaults_once_and_is_validated_once():
    """No rate means DEFAULT_RATE; a rate outside [0, 1) fails naming the rate for every method."""
    assert get_method("evs").config().rate == DEFAULT_RATE == EVSConfig().rate
    for name in ("evs", "stts", "none"):
        with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
            get_method(name).config(rate=1.0)


def test_threshold_rules():
    """Only threshold-capable methods take a threshold, never together with a rate; evs-threshold needs one."""
    with pytest.raises(ValueError, match="not 'stts'"):
        get_method("stts").config(threshold=0.1)
    with pytest.raises(ValueError, match="not both"):
        get_method("evs").config(rate=0.5, threshold=0.1)
    with pytest.raises(ValueError, match="needs a threshold"):
        get_method("evs-threshold").config(rate=0.5)
    with pytest.raises(ValueError, match="finite float >= 0"):
        get_method("evs").config(threshold=-1.0)
    assert set(method_names(threshold=True)) == {"evs", "evs-pixel", "evs-pre", "evs-threshold"}


def test_stts_and_no_patch_methods():
    """stts builds an STTSConfig with the extra fields; none/uniform/uptrained patch nothing; extras elsewhere fail."""
    assert get_method("stts").config(rate=0.4, prune_at=1) == STTSConfig(ratio=0.4, prune_at=1)
    for name in ("none", "uniform", "uptrained"):
        assert get_method(name).config(rate=0.5) is None
    with pytest.raises(ValueError, match="takes no STTS settings"):
        get_method("evs").config(rate=0.5, prune_at=1)


def test_unknown_names_and_places_fail_listing_the_choices():
    """An unknown method, or one a command does not offer, fails with the command's choices."""
    with pytest.raises(ValueError, match="unknown method 'tome'.*evs"):
        get_method("tome")
    with pytest.raises(ValueError, match="for train; expected one of: evs, stts"):
        get_method("uniform", "train")
    with pytest.raises(ValueError, match="unknown place"):
        method_names("serve")


def test_families_come_from_the_adapters_capabilities():
    """A method that needs a capability lists exactly the families whose adapter declares it."""
    from videoprune.models import ADAPTERS

    pre = get_method("evs-pre")
    assert set(pre.families()) == {t for t, a in ADAPTERS.items() if a.supports_pre_encoder}
    assert pre.supports("qwen2_5_vl") and not pre.supports("llava_onevision")
    with pytest.raises(ValueError, match="does not support model_type 'llava_onevision'"):
        pre.check_family("llava_onevision")
    assert "molmo2" in get_method("stts").families()
    assert set(get_method("evs").families()) >= set(ADAPTERS)


def test_uniform_frames_matches_the_budget():
    """uniform keeps 1 - rate of the 2-frame slices, at least one slice; fps sampling is refused."""
    assert uniform_frames(16, 0.75) == 4
    assert uniform_frames(16, 0.99) == 2
    assert uniform_frames(16, 0.0) == 16
    with pytest.raises(ValueError, match="fixed frame count"):
        uniform_frames(None, 0.5)


def test_every_method_is_documented_and_offered_somewhere():
    """Every entry has help text and at least one place that offers it."""
    for m in METHODS.values():
        assert m.help and m.where, m.name


# --------------------------------------------------------------------------------------------
# what the commands read from the table
# --------------------------------------------------------------------------------------------
def test_check_budget_without_a_default_leaves_the_rate_to_the_caller():
    """default=None keeps "no rate given" as None (ask then reads an export's rate); the method rules still apply."""
    assert get_method("evs").check_budget(None, None, default=None) == (None, None)
    assert get_method("evs").check_budget(0.5, None, default=None) == (0.5, None)
    assert get_method("evs-pixel").check_budget(None, 0.1, default=None) == (None, 0.1)
    with pytest.raises(ValueError, match="needs a threshold"):
        get_method("evs-threshold").check_budget(None, None, default=None)


def test_validate_check_budget_is_the_one_rate_or_threshold_rule():
    """validate.check_budget: exclusive rate/threshold, each validated, DEFAULT_RATE when neither is given."""
    from videoprune.validate import check_budget

    assert check_budget(None, None) == (DEFAULT_RATE, None)
    assert check_budget(0, None) == (0.0, None)
    assert check_budget(None, 0.3) == (None, 0.3)
    with pytest.raises(ValueError, match="exclusive: give one, not both"):
        check_budget(0.5, 0.1)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        check_budget(1.0, None)


class _Bundle:
    """A stand-in ModelBundle: records the (ratio, scorer) its STTS config was asked for."""

    def stts_config(self, ratio, scorer="default"):
        return ("stts", ratio, scorer)


def test_bundle_config_takes_stts_settings_from_the_bundle_and_the_rest_from_config():
    """bundle_config: stts asks the bundle (the scorer's saved settings), every other method is config()."""
    bundle = _Bundle()
    assert get_method("stts").bundle_config(bundle, 0.4, scorer="s.safetensors") == ("stts", 0.4, "s.safetensors")
    assert get_method("stts").bundle_config(bundle) == ("stts", DEFAULT_RATE, "default")
    assert get_method("evs-pre").bundle_config(bundle, 0.5) == get_method("evs-pre").config(0.5)
    assert get_method("random").bundle_config(bundle, 0.5, seed=4) == EVSConfig(rate=0.5, criterion="random", seed=4)
    assert get_method("none").bundle_config(bundle, 0.5) is None
    with pytest.raises(ValueError, match="not 'stts'"):
        get_method("stts").bundle_config(bundle, threshold=0.1)


def test_apply_patches_with_the_methods_config_and_none_patches_nothing(monkeypatch):
    """apply(model, rate) is patch(model, config(rate)); a method without a config patches nothing."""
    import importlib

    calls = []
    patch_module = importlib.import_module("videoprune.patch")  # videoprune.patch is also the function's name
    monkeypatch.setattr(patch_module, "patch", lambda model, cfg: calls.append((model, cfg)) or "handle")
    assert get_method("evs-pixel").apply("model", 0.5) == "handle"
    assert calls == [("model", EVSConfig(rate=0.5, criterion="pixel"))]
    assert get_method("none").apply("model", 0.5) is None and len(calls) == 1


def test_cli_choices_list_pruning_methods_first_and_the_baseline_last():
    """method_choices(where): the place's methods in table order, 'none' moved to the end."""
    from videoprune.methods import method_choices

    assert method_choices("ask") == ("evs", "evs-pixel", "evs-pre", "random", "stts", "none")
    assert method_choices("train") == method_names("train") == ("evs", "stts")
    assert set(method_choices("accuracy")) == set(method_names("accuracy"))


def test_evs_methods_run_only_on_families_with_an_evs_adapter():
    """evs / evs-threshold / random / uptrained need an EVS adapter: an STTS-only family (molmo2) is refused."""
    from videoprune.models import ADAPTERS

    for name in ("evs", "evs-threshold", "random", "uptrained"):
        assert set(get_method(name).families()) == set(ADAPTERS), name
    assert "molmo2" in get_method("none").families() and "molmo2" in get_method("uniform").families()
    with pytest.raises(ValueError, match="method 'evs' does not support model_type 'molmo2'"):
        get_method("evs").check_family("molmo2")


@pytest.mark.parametrize("module, where", [
    ("videoprune.ask:ASK_METHODS", "ask"),
    ("videoprune.bench.accuracy:METHODS", "accuracy"),
    ("videoprune.integrations.pruned_qa:METHODS", "eval"),
    ("videoprune.train.config:METHODS", "train"),
])
def test_each_commands_method_list_is_the_tables(module, where):
    """ask, bench accuracy, the eval runner and train offer exactly the table's methods for their place."""
    import importlib

    mod, name = module.split(":")
    assert set(getattr(importlib.import_module(mod), name)) == set(method_names(where))


def test_bench_speed_methods_are_the_tables():
    """bench speed sweeps the table's 'speed' methods, in the table's order, each wrapping its table entry."""
    pytest.importorskip("transformers")
    from videoprune.bench.speed import METHODS as SPEED

    assert tuple(SPEED) == method_names("speed")
    assert all(SPEED[n].spec is METHODS[n] for n in SPEED)


# --------------------------------------------------------------------------------------------
# the measure "outside the methods table, no module maps a method name to a config"
# --------------------------------------------------------------------------------------------
#: method names that prune ('none' is left out: it maps to no config, and is an everyday word in flags)
PRUNING_NAMES = frozenset(n for n, m in METHODS.items() if m.kind != "none")
CONFIG_CLASSES = frozenset({"EVSConfig", "STTSConfig"})


def _method_names_in(node) -> set[str]:
    """The pruning-method names written as string constants in ``node`` (a constant, or a tuple/list/set of them)."""
    elts = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {e.value for e in elts if isinstance(e, ast.Constant) and e.value in PRUNING_NAMES}


def _callee(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def table_rule_violations(root: Path) -> list[str]:
    """Where a module under ``root`` (methods.py aside) writes its own method mapping.

    Three shapes, each of which the methods table replaces: a literal list of two or more
    method names (use ``method_names(where)``), a dict literal keyed by two or more method
    names (a private table), and a function that compares against a method name and builds an
    EVSConfig / STTSConfig (a name -> config branch).
    """
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "methods.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(_method_names_in(node)) >= 2:
                found.append(f"{where}: a list of method names")
            elif isinstance(node, ast.Dict) and len(set().union(*map(_method_names_in, filter(None, node.keys)))) >= 2:
                found.append(f"{where}: a dict keyed by method names")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside = list(ast.walk(node))
                compares = any(isinstance(n, ast.Compare) and any(map(_method_names_in, [n.left, *n.comparators]))
                               for n in inside)
                if compares and any(isinstance(n, ast.Call) and _callee(n) in CONFIG_CLASSES for n in inside):
                    found.append(f"{where}: {node.name} builds a config from a method-name comparison")
    return found


def test_no_module_outside_the_table_maps_a_method_name_to_a_config():
    """src/videoprune has no method list, method-keyed dict or name -> config branch outside methods.py."""
    import videoprune

    assert table_rule_violations(Path(videoprune.__file__).parent) == []


def test_the_rule_finds_each_shape_it_forbids(tmp_path):
    """The checker flags a method list, a method-keyed dict and a name -> EVSConfig branch (and not methods.py)."""
    (tmp_path / "methods.py").write_text('M = ("evs", "stts")\n')
    (tmp_path / "bad.py").write_text(
        'NAMES = ("evs", "evs-pixel")\n'
        'KW = {"evs": {}, "random": {"criterion": "random"}}\n'
        'def config(method, rate):\n'
        '    if method == "evs-pre":\n'
        '        return EVSConfig(rate=rate, criterion="pixel", stage="pre_encoder")\n'
        '    return None\n')
    assert sorted(v.split(": ", 1)[1] for v in table_rule_violations(tmp_path)) == [
        "a dict keyed by method names", "a list of method names",
        "config builds a config from a method-name comparison"]
