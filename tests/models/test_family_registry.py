"""The family registry: one record per family, and every module outside models/ asks it instead of naming one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import videoprune
from videoprune.models import ADAPTERS, FAMILIES, FAMILIES_BY_TYPE, family_for
from videoprune.models import registry

SRC = Path(videoprune.__file__).parent
MODELS = SRC / "models"


def _string_constants(path: Path):
    """(line, value) of every string literal in ``path`` (f-string parts included)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_no_module_outside_models_names_a_model_type():
    """A registered model_type string literal outside src/videoprune/models/ is a family listed twice."""
    types = set(FAMILIES_BY_TYPE)
    hits = [f"{path.relative_to(SRC.parent)}:{line}: {value!r}"
            for path in sorted(SRC.rglob("*.py")) if MODELS not in path.parents
            for line, value in _string_constants(path) if value in types]
    assert not hits, "model_type named outside models/ (ask videoprune.models.registry):\n" + "\n".join(hits)


def test_the_scan_sees_a_model_type_literal(tmp_path):
    """The scan above finds a model_type literal where one is written (it is not vacuous)."""
    path = tmp_path / "x.py"
    path.write_text('FAMILY = "qwen2_5_vl"\nTEXT = f"{FAMILY} is not a literal"\n')
    assert [v for _, v in _string_constants(path) if v in FAMILIES_BY_TYPE] == ["qwen2_5_vl"]


def test_each_registry_line_is_one_family_file_exporting_one_record():
    """Every registry entry is a models/<family>.py whose FAMILY record is the registered one, named after it."""
    assert len(registry._MODULES) == len(FAMILIES)
    for module, family in zip(registry._MODULES, FAMILIES):
        assert (MODELS / f"{module}.py").is_file()
        assert family.name == module
        for t in family.model_types:
            assert FAMILIES_BY_TYPE[t] is family


def test_no_model_type_belongs_to_two_families():
    """Each model_type maps to exactly one record."""
    listed = [t for f in FAMILIES for t in f.model_types]
    assert len(listed) == len(set(listed)) == len(FAMILIES_BY_TYPE)


def test_family_for_accepts_type_config_model_and_arch_dict():
    """family_for reads the model_type from a string, a config, a model or an architecture dict."""
    fam = FAMILIES_BY_TYPE["qwen2_vl"]
    config = fam.tiny_config()
    assert family_for("qwen2_vl") is family_for(config) is family_for({"model_type": "qwen2_vl"}) is fam

    class Model:
        pass

    model = Model()
    model.config = config
    assert family_for(model) is fam


def test_unknown_model_type_raises_one_line_listing_the_supported_ones():
    """An unregistered model_type fails with one line that lists every supported model_type."""
    with pytest.raises(ValueError) as err:
        family_for("gpt2")
    msg = str(err.value)
    assert "\n" not in msg and "'gpt2'" in msg
    assert all(t in msg for t in FAMILIES_BY_TYPE)


def test_adapters_and_stts_integrations_come_from_the_records():
    """ADAPTERS and STTS_FAMILIES are exactly the records' adapters and STTS integrations."""
    from videoprune.stts.hf import STTS_FAMILIES

    assert ADAPTERS == {t: f.adapter for t, f in FAMILIES_BY_TYPE.items() if f.adapter is not None}
    assert STTS_FAMILIES == {t: f.stts for t, f in FAMILIES_BY_TYPE.items() if f.stts is not None}
    for f in FAMILIES:
        if f.stts is not None:
            assert f.stts_class().__name__ == f.stts.split(":")[1]


def test_preprocessing_specs_and_bench_architectures_come_from_the_records():
    """video.FAMILIES holds the records' specs; every bench architecture belongs to the record holding it."""
    from videoprune.bench.configs import ARCHITECTURES
    from videoprune.video import FAMILIES as SPECS, get_family

    assert dict(SPECS) == {f.name: f.spec for f in FAMILIES if f.spec is not None and f.spec.name == f.name}
    for t, f in FAMILIES_BY_TYPE.items():
        if f.spec is not None:
            assert get_family(t) is f.spec
    names = [n for f in FAMILIES for n in f.full_size]
    assert list(ARCHITECTURES) == names
    for f in FAMILIES:
        for name, arch in f.full_size.items():
            assert family_for(arch) is f and ARCHITECTURES[name] == arch


def test_tiny_training_models_are_the_records_offering_one():
    """TINY_MODELS lists tiny:<family> for exactly the records with a training tiny model."""
    from videoprune.train import TINY_MODELS

    assert TINY_MODELS == tuple(f"tiny:{f.name}" for f in FAMILIES if f.train_tiny is not None)
    assert TINY_MODELS == ("tiny:qwen2_vl", "tiny:qwen2_5_vl")


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_every_tiny_config_builds_its_own_model_type(family):
    """Each record's tiny config is a config of that family, on transformers' own config class."""
    fam = FAMILIES_BY_TYPE[family]
    config = fam.tiny_config()
    assert config.model_type in fam.model_types
    assert type(config) is fam.transformers_classes()[0]


def test_llava_tokens_per_side_has_one_rule_for_spec_and_adapter():
    """The LLaVA-OneVision spec's pooled side is what the adapter computes from the full-size config."""
    from videoprune.bench.configs import meta_model  # the meta device: shapes only, no memory
    from videoprune.models.llava_onevision import LlavaOnevisionAdapter, tokens_per_side

    fam = FAMILIES_BY_TYPE["llava_onevision"]
    vc = next(iter(fam.full_size.values()))["vision_config"]
    assert fam.spec.llava_pooled_side == tokens_per_side(vc["image_size"], vc["patch_size"]) == 14
    model = meta_model(next(iter(fam.full_size.values())))
    assert LlavaOnevisionAdapter(model).tokens_per_side() == fam.spec.llava_pooled_side


def test_molmo2_tap_depth_is_one_function_for_stts_and_bench():
    """bench speed's STTS layer and the Molmo2 STTS integration read the same feature-tap depth."""
    import stts_builders as S
    from videoprune.bench.speed import stts_prune_at
    from videoprune.models.molmo2 import tapped_depth
    from videoprune.models.stts_molmo2 import Molmo2STTS

    model = S.build_molmo2(vit_layers=6, taps=[-1, -3])
    assert tapped_depth(model.config) == 6 == family_for(model).tapped_depth(model.config)
    assert Molmo2STTS(model, S.stts_cfg()).depth == tapped_depth(model.config)
    assert stts_prune_at(model) == min(6 - 2, max(0, round(4 * 6 / 25) - 1))
    shallow = S.build_molmo2(vit_layers=6, taps=[-3])  # the last two blocks never reach the LLM
    assert tapped_depth(shallow.config) == Molmo2STTS(shallow, S.stts_cfg()).depth == 4


def test_method_families_in_bench_speed_come_from_the_records():
    """bench speed's per-method family lists are the registry's pixel / pre-encoder / STTS families."""
    from videoprune.bench.speed import METHODS

    assert METHODS["evs-pixel"].families == tuple(t for t, f in FAMILIES_BY_TYPE.items() if f.supports_pixel_criterion)
    assert METHODS["evs-pre"].families == tuple(t for t, f in FAMILIES_BY_TYPE.items() if f.supports_pre_encoder)
    assert set(METHODS["stts"].families) == {"molmo2", "qwen2_5_vl"}
    assert "qwen3_vl_moe" in METHODS["evs-pre"].families
