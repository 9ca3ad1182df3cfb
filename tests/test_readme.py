"""The README's Python examples run as written (in a scratch folder holding kodim23.png)."""
import re
import shutil
from pathlib import Path

import pytest

from conftest import KODAK, ROOT, needs_kodak


def blocks():
    """The README's Python examples, except the Ray one (it needs a cluster; tests/test_ray.py
    runs the same calls on a local one)."""
    text = (ROOT / "README.md").read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "ray.init" not in b]


def test_readme_has_examples():
    assert len(blocks()) >= 4


@needs_kodak
@pytest.mark.parametrize("i", range(len(blocks())))
def test_readme_example_runs(i, tmp_path, monkeypatch):
    shutil.copy(KODAK / "kodim23.png", tmp_path / "kodim23.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks()[i], f"README.md[python block {i}]", "exec"), {})
    if i == 0:
        assert Path("kodim23.fcc").exists() and Path("roundtrip.png").exists()
