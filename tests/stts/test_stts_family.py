"""STTS family integrations implement the written contract :class:`videoprune.stts.family.STTSFamily`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from videoprune.models import FAMILIES
from videoprune.stts import STTSConfig
from videoprune.stts.family import STTSFamily

#: the members every integration must provide, as STTSFamily declares them
MEMBERS = {"__init__", "position_axes", "vision_width", "vision_device", "pool", "fingerprint_fields", "install"}


class _Complete(STTSFamily):
    """A minimal integration providing every member (what a new family has to write)."""

    position_axes = 1

    def __init__(self, model, cfg):
        self.model = self.inner = model

    vision_width = 8
    vision_device = torch.device("cpu")

    def pool(self, cfg):
        return 2

    def fingerprint_fields(self, cfg):
        return {}

    def install(self, handle):
        pass


def test_the_contract_declares_exactly_the_members_patch_stts_and_the_llm_layer_call():
    """STTSFamily's abstract members are the constructor, position_axes, vision_width/device, pool, fingerprint_fields and install."""
    assert STTSFamily.__abstractmethods__ == frozenset(MEMBERS)


@pytest.mark.parametrize("missing", sorted(MEMBERS - {"__init__"}))
def test_a_subclass_missing_a_member_fails_at_instantiation_naming_it(missing):
    """Leaving out any member makes ``cls(model, cfg)`` raise TypeError naming that member, before any call runs."""
    partial = type("Partial", (STTSFamily,), {k: v for k, v in vars(_Complete).items() if k != missing})
    with pytest.raises(TypeError, match=f"abstract.*{missing}"):
        partial(torch.nn.Linear(2, 2), STTSConfig())


def test_a_complete_subclass_instantiates():
    """A subclass that writes every member builds and answers for them."""
    family = _Complete(torch.nn.Linear(2, 2), STTSConfig())
    assert (family.position_axes, family.vision_width, family.pool(None)) == (1, 8, 2)


def test_every_registered_stts_integration_subclasses_the_contract_and_is_concrete():
    """Each family record's STTS class is an STTSFamily with no member left abstract."""
    classes = [f.stts_class() for f in FAMILIES if f.stts is not None]
    assert classes, "no family has an STTS integration"
    for cls in classes:
        assert issubclass(cls, STTSFamily), cls
        assert not cls.__abstractmethods__, (cls, cls.__abstractmethods__)


def test_patch_stts_refuses_an_integration_that_does_not_subclass_the_contract(monkeypatch):
    """A registered integration class outside STTSFamily is a one-line TypeError naming it, not a later AttributeError."""
    from videoprune.stts import hf

    monkeypatch.setitem(hf.STTS_FAMILIES, "duck_typed", "collections:OrderedDict")
    model = SimpleNamespace(config=SimpleNamespace(model_type="duck_typed"))
    with pytest.raises(TypeError, match="collections:OrderedDict must subclass .*STTSFamily"):
        hf.patch_stts(model, STTSConfig())
