"""training/cascade.py, the chain that turns new weights into a complete bundle: its plan (a dry
run) and its refusals. Running the stages needs torch and an hour or more; it was smoke-tested
end to end (models/MODEL_CARD.md). These tests need neither: the script's top level is stdlib."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "training" / "cascade.py"
STAGES = ["export", "postfilter", "refine", "int8_decoder", "mixed_decoder", "policy", "postfilter_int8",
          "fast_encoder", "int8_encoder", "reduce"]

pytestmark = pytest.mark.skipif(not (ROOT / "models" / "hp1" / "model.json").is_file()
                                or not (ROOT / "models" / "hp2" / "model.json").is_file(),
                                reason="needs the repository's models/hp1 and models/hp2")


def cascade(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_dry_run_plans_the_missing_stages_in_order_and_touches_nothing():
    # hp1 ships archived (decode only): exported, but without any of the derived graphs
    default = (ROOT / "models" / "DEFAULT").read_text()
    meta = (ROOT / "models" / "hp1" / "model.json").read_bytes()
    r = cascade("hp1", "--weights", "w.npz", "--from", "hp2", "--scale", "0.5", "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.endswith("export: done already") for line in lines)
    planned = [line.split()[1].rstrip(":") for line in lines[1:] if "done already" not in line]
    order = [s for i, s in enumerate(planned) if i == 0 or planned[i - 1] != s]
    assert order == STAGES[1:]
    text = r.stdout
    assert re.search(r"postfilter: python training/postfilter.py train .*--seconds 900$", text, re.M)  # 1800 s x 0.5
    assert "--init models/hp2/postfilter.onnx" in text and "--init models/hp2/encoder_fast.onnx" in text
    assert "--bundle hp1" in text and "--measure-policy --from hp2" in text
    assert (ROOT / "models" / "DEFAULT").read_text() == default
    assert (ROOT / "models" / "hp1" / "model.json").read_bytes() == meta
    assert not (ROOT / "training" / "runs" / "cascade-hp1").exists()


def test_only_runs_the_named_stages():
    r = cascade("hp1", "--weights", "w.npz", "--from", "hp2", "--only", "refine,policy", "--dry-run")
    assert r.returncode == 0, r.stderr
    stages = {line.split()[1].rstrip(":") for line in r.stdout.splitlines()[1:]}
    assert stages == {"refine", "policy"}


@pytest.mark.parametrize("args,message", [
    (("hp2", "--weights", "w.npz", "--from", "hp2"), "--from must name an older bundle"),
    (("hp9", "--weights", "w.npz", "--from", "nosuch"), "models/nosuch/model.json not found"),
    (("hp9", "--weights", "w.npz", "--from", "hp2", "--only", "export,train"), "unknown stages ['train']"),
    (("hp9", "--from", "hp2"), "--weights is required"),
])
def test_refusals_say_what_is_wrong(args, message):
    r = cascade(*args, "--dry-run")
    assert r.returncode != 0
    assert message in r.stderr
