"""The methods table (videoprune.methods): one name -> one config, validated in one place."""

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
