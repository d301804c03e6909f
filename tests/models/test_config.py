"""EVSConfig validation: every bad field is rejected by name; defaults are rate mode at 0.75."""

import pytest

from videoprune import EVSConfig


def test_default_is_rate_mode_at_three_quarters():
    """A bare EVSConfig prunes by rate at 0.75 with no threshold set."""
    cfg = EVSConfig()
    assert cfg.rate == 0.75 and cfg.threshold is None


def test_threshold_alone_leaves_rate_unset():
    """Giving only a threshold switches to threshold mode: rate stays None instead of taking the 0.75 default."""
    assert EVSConfig(threshold=0.1).rate is None


@pytest.mark.parametrize("kwargs, field", [
    (dict(rate=1.0), "rate"), (dict(rate=-0.1), "rate"), (dict(rate=0.5, threshold=0.1), "exclusive"),
    (dict(threshold=float("nan")), "threshold"), (dict(threshold=0.1, min_keep_fraction=1.5), "min_keep_fraction"),
    (dict(threshold=0.1, min_keep_fraction=0.6, max_keep_fraction=0.5), "min_keep_fraction"),
    (dict(rate=0.5, max_keep_fraction=0.5), "threshold mode"), (dict(criterion="motion"), "criterion"),
    (dict(stage="pre_encoder"), "criterion=.pixel."), (dict(stage="llm"), "stage"),
    (dict(apply_to_images="yes"), "apply_to_images"),
])
def test_invalid_values_raise_naming_the_field(kwargs, field):
    """Each invalid EVSConfig value (rate out of range, rate with threshold, NaN threshold, bad keep fractions, unknown
    criterion or stage, pre-encoder without the pixel criterion, a non-bool apply_to_images) raises an error naming
    the field."""
    with pytest.raises(ValueError, match=field):
        EVSConfig(**kwargs)


def test_every_field_has_help_text():
    """Every EVSConfig field carries help text, since the CLI builds its flags from them."""
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(EVSConfig))
