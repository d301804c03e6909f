"""The vision-tower table lives in models/family.py, so the modules below the registry never look the registry up."""

from __future__ import annotations

import json
import subprocess
import sys

from videoprune.models import FAMILIES
from videoprune.models.family import vision_tower_families

#: Prints the tower table after importing qwen_vision alone, in a fresh interpreter.
PROBE = ("import json, videoprune.models.qwen_vision as q; from videoprune.models.family import vision_tower_families;"
         " print(json.dumps(vision_tower_families()))")


def test_table_lists_every_record_with_a_vision_tower():
    """Each record naming a vision tower is in the table, and nothing else is."""
    expected = {f.vision_tower: f.name for f in FAMILIES if f.vision_tower is not None}
    assert expected and vision_tower_families() == expected


def test_importing_qwen_vision_alone_yields_the_full_table():
    """A fresh `import videoprune.models.qwen_vision` builds every record first (models/__init__ loads the registry)."""
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {f.vision_tower: f.name for f in FAMILIES if f.vision_tower is not None}


def test_table_is_a_copy():
    """Callers cannot edit the table through the returned dict."""
    table = vision_tower_families()
    table["NotATower"] = "nothing"
    assert "NotATower" not in vision_tower_families()
