#!/usr/bin/env python3
"""Make a complete bundle from new weights: the export and every derived graph, in one run.

    python training/cascade.py hp3 --weights weights.npz [--from hp2] [--scale 0.5] [--make-default]
    python training/cascade.py hp3 --weights weights.npz --dry-run      # the commands, nothing run

A new default model (weights from training/train.py or training/gpu_run.sh) needs more than its
export: the graphs that make the codec fast and good were trained against the old model and do
not carry over (MODEL_CARD.md, "Limits and next steps"). This script runs the whole chain, in
order of what a bundle gains from it, each stage a command line of the scripts that exist:

    export          training/export.py (graphs, coding tables calibrated on training photos)
    postfilter      training/postfilter.py prep / train (from --from's filter) / export
    refine          training/refine_graph.py (effort 2 and 3; seconds)
    int8_decoder    training/qat_decoder.py calibrate / train / export --name int8
    mixed_decoder   training/qat_decoder.py calibrate --wide 2 --from-graph / train / export --name mixed
    policy          default_decoder_by_quality measured: int8 up to the highest quality within 0.1 dB
                    of the bit-exact decoder on training photos, then mixed as far as it stays within
    postfilter_int8 training/postfilter.py prep (the policy's decoders) and training/qat_postfilter.py
    fast_encoder    training/encoder_finetune.py (from --from's fast encoder) and training/add_encoder.py
    int8_encoder    training/qat_encoder.py calibrate / train / export --name int8
    reduce          training/reduce_heads.py prep / train (factors 8, 4, 2) / export: thumbnail heads

A stage is done when models/NAME/model.json lists what it makes, so the script resumes after an
interruption, and a bundle is consistent (shippable) after every stage: what is missing falls
back to the default paths. Training times are each stage's default seconds times --scale
(1.0: 4 h 15 min of training plus about 25 min of data preparation, calibration and
measurement on 2 cores; 0.5: about 2 h 25 min; 0.02 ran every stage but reduce in 10 min, a
smoke test).
A rehearsal at 0.5 with the int8 decoders' earlier 1,500 s (hp2's weights as a 13-level bundle,
93.6 min) made a post-filter, fast and int8 encoders and an int8 post-filter as good as hp2's,
but int8 and mixed decoders about twice as lossy (350 fine-tuning steps against hp2's 1,068 and
1,182; MODEL_CARD.md), hence their 2,400 s now; give them more when time allows
(--only int8_decoder,mixed_decoder,policy in a later session, after removing their entries). Intermediate files and one log per stage go
to training/runs/cascade-NAME/; the scripts read models/DEFAULT, which points at NAME while the
cascade runs and is restored at the end unless --make-default. Never reads Kodak for training
(the scripts refuse it); the post-filter's pairs are training crops.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
T = os.path.join(ROOT, "training")


def meta_of(name):
    path = os.path.join(ROOT, "models", name, "model.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def stages(a, run):
    """(name, done(meta), [commands]) in the order they run. Commands are argument lists;
    seconds are the stage's training time at --scale 1."""
    B, O = a.name, a.base
    s = lambda seconds: str(max(30, int(seconds * a.scale)))  # noqa: E731
    pf, old_pf = os.path.join(run, "pf"), os.path.join(ROOT, "models", O, "postfilter.onnx")
    unet = ["--arch", "unet", "--ch", "32", "--ch2", "64", "--blocks", "2"]
    cache = ["--cache", os.path.join(run, "latents320.npy")]
    crops = str(max(200, int(a.crops * min(1.0, a.scale * 2))))
    return [
        ("export", lambda m: m is not None,
         [[PY, f"{T}/export.py", "--ckpt", a.weights, "--name", B]]),
        ("postfilter", lambda m: "postfilter" in m,
         [[PY, f"{T}/postfilter.py", "prep", "--out", pf, "--crops", crops, "--pairs", "pairs_bitexact.npz",
           "--decoder", "bitexact"],
          [PY, f"{T}/postfilter.py", "train", "--out", pf, "--pairs", "pairs_bitexact.npz", *unet, "--init", old_pf,
           "--loss", "psnr", "--lr", "2e-4", "--threads", "2", "--eval-every", "1000", "--seconds", s(1800)],
          [PY, f"{T}/postfilter.py", "export", "--out", pf, *unet, "--bundle", B, "--max-quality", "100",
           "--note", f"{O}'s two-scale post-filter trained on {B}'s decoded training crops (training/cascade.py)"]]),
        ("refine", lambda m: "refine" in m,
         [[PY, f"{T}/refine_graph.py", "--bundle", B]]),
        ("int8_decoder", lambda m: "int8" in m.get("decoders", {}),
         [[PY, f"{T}/qat_decoder.py", "calibrate", "--out", f"{run}/qat.pt", *cache],
          [PY, f"{T}/qat_decoder.py", "train", "--init", f"{run}/qat.pt", "--out", f"{run}/qat.pt", *cache,
           "--log", f"{run}/qat.log", "--seconds", s(2400)],
          [PY, f"{T}/qat_decoder.py", "export", "--init", f"{run}/qat.pt", "--bundle", B, "--name", "int8",
           "--note", f"int8 synthesis of {B} (training/cascade.py)"]]),
        ("mixed_decoder", lambda m: "mixed" in m.get("decoders", {}),
         [[PY, f"{T}/qat_decoder.py", "calibrate", "--wide", "2", "--from-graph",
           os.path.join(ROOT, "models", B, "decoder_int8.onnx"), "--out", f"{run}/qmix.pt", *cache],
          [PY, f"{T}/qat_decoder.py", "train", "--init", f"{run}/qmix.pt", "--out", f"{run}/qmix.pt", *cache,
           "--log", f"{run}/qmix.log", "--lr", "3e-6", "--lr-scale", "1e-5", "--seconds", s(2400)],
          [PY, f"{T}/qat_decoder.py", "export", "--init", f"{run}/qmix.pt", "--bundle", B, "--name", "mixed",
           "--note", f"the int8 decoder of {B} with its first two stages wide (training/cascade.py)"]]),
        ("policy", lambda m: "default_decoder_by_quality" in m,
         [[PY, os.path.abspath(__file__), B, "--measure-policy", "--from", O]]),
        ("postfilter_int8", lambda m: "postfilter_int8" in m,
         [[PY, f"{T}/postfilter.py", "prep", "--out", pf, "--crops", crops, "--pairs", "pairs_policy.npz"],
          [PY, f"{T}/qat_postfilter.py", "calibrate", "--pairs", f"{pf}/pairs_policy.npz", "--bundle", B,
           "--out", f"{run}/qpf.pt"],
          [PY, f"{T}/qat_postfilter.py", "train", "--pairs", f"{pf}/pairs_policy.npz", "--bundle", B,
           "--init", f"{run}/qpf.pt", "--out", f"{run}/qpf.pt", "--threads", "2", "--lr", "5e-5",
           "--seconds", s(1500)],
          [PY, f"{T}/qat_postfilter.py", "export", "--init", f"{run}/qpf.pt", "--bundle", B,
           "--max-quality", "100", "--note", f"{B}'s post-filter in integers (training/cascade.py)"]]),
        ("fast_encoder", lambda m: "fast" in m.get("encoders", {}),
         [[PY, f"{T}/encoder_finetune.py", "--model", os.path.join(ROOT, "models", f"{B}.weights.npz"),
           "--init", os.path.join(ROOT, "models", O, "encoder_fast.onnx"), "--out", f"{run}/fast.npz",
           "--lr", "5e-5", "--ema", "0.998", "--seconds", s(1800)],
          [PY, f"{T}/add_encoder.py", B, "fast", f"{run}/fast.npz",
           "--note", f"the lite analysis (about half the encoder time), from {O}'s, trained against {B} "
                     "(training/cascade.py)"]]),
        ("int8_encoder", lambda m: "int8" in m.get("encoders", {}),
         [[PY, f"{T}/qat_encoder.py", "calibrate", "--out", f"{run}/qate.pt"],
          [PY, f"{T}/qat_encoder.py", "train", "--init", f"{run}/qate.pt", "--out", f"{run}/qate.pt",
           "--log", f"{run}/qate.log", "--seconds", s(1500)],
          [PY, f"{T}/qat_encoder.py", "export", "--init", f"{run}/qate.pt", "--bundle", B, "--name", "int8",
           "--note", f"int8 version of {B}'s fast encoder (training/cascade.py)"]]),
        ("reduce", lambda m: "reduce" in m,
         [[PY, f"{T}/reduce_heads.py", "prep", "--out", f"{run}/rh", "--bundle", B,
           "--crops", str(max(200, int(3000 * min(1.0, a.scale * 2))))],
          *[[PY, f"{T}/reduce_heads.py", "train", "--out", f"{run}/rh", "--factor", str(f), "--threads", "2",
             "--seconds", s(t)] for f, t in ((8, 900), (4, 1500), (2, 1500))],
          [PY, f"{T}/reduce_heads.py", "export", "--out", f"{run}/rh", "--bundle", B, "--factors", "8", "4", "2",
           "--note", f"reduce heads of {B}: conv 3x3 96->64, ReLU, conv 3x3 on its 1/8 and 1/4 features "
                     "(training/cascade.py)"]]),
    ]


BOUND_DB = 0.1  # what a faster default decoder may lose against the bit-exact float one (README)


def measure_policy(a):
    """Chooses models/NAME's default_decoder_by_quality by measurement, as --from's was chosen:
    the int8 decoder up to the highest quality where it stays within BOUND_DB of the bit-exact
    decoder (each with its post-filter), then the mixed decoder up to where it does, on centre
    crops (512 x 768) of --policy-photos training photos (spread over the large ones), never
    Kodak. Writes model.json."""
    import numpy as np

    import fastcodec
    from train import load_images  # refuses Kodak

    photos = [im if im.shape[0] <= im.shape[1] else im.transpose(1, 0, 2) for im in load_images(a.data)]
    photos = [im for im in photos if im.shape[0] >= 512 and im.shape[1] >= 768]
    photos = photos[::max(1, len(photos) // a.policy_photos)][:a.policy_photos]
    crops = [np.ascontiguousarray(im[(im.shape[0] - 512) // 2:][:512, (im.shape[1] - 768) // 2:][:, :768])
             for im in photos]
    have = set(meta_of(a.name).get("decoders", {}))
    ref = fastcodec.Codec(a.name, threads=2, decoder="bitexact")
    decoders = {name: fastcodec.Codec(a.name, threads=2, decoder=name) for name in ("int8", "mixed") if name in have}
    mse = lambda x, y: np.mean((x.astype(np.float64) - y) ** 2)  # noqa: E731

    def loss(name, q):
        """Mean dB lost against the bit-exact decoder over the crops at quality q."""
        dec = decoders[name]
        d = []
        for im in crops:
            data = ref.compress(im, quality=q)
            d.append(10 * np.log10(mse(dec.decompress(data), im) / mse(ref.decompress(data), im)))
        return float(np.mean(d))

    policy, lo = [], 1
    for name in ("int8", "mixed"):
        if name not in have:
            continue
        best = None
        for q in range(lo if lo > 1 else 20, 101, 5):
            lq = loss(name, q)
            print(f"{name} q{q}: {lq:+.3f} dB against bitexact", flush=True)
            if lq > BOUND_DB:
                break
            best = q
        if best is None:
            continue
        policy.append([best, name])
        lo = best + 5
        if best == 100:
            break
    from qgraph import update_model_json  # atomic
    update_model_json(a.name, lambda meta: meta.__setitem__("default_decoder_by_quality", policy))
    print(f"default_decoder_by_quality {policy} ({a.base}'s: {meta_of(a.base).get('default_decoder_by_quality')}); "
          f"{len(crops)} training photos, bound {BOUND_DB} dB", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the new bundle's name (models/NAME/)")
    ap.add_argument("--weights", help="fp32 or fp16 weights npz (train.py --weights-out, gpu_run.sh)")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--policy-photos", type=int, default=12)
    ap.add_argument("--measure-policy", action="store_true", help="only the policy stage's measurement (the "
                    "cascade runs it in a subprocess with this tree's package)")
    ap.add_argument("--from", dest="base", default=None,
                    help="the bundle whose post-filter, fast encoder and decoder policy start the new ones "
                         "(default: models/DEFAULT when the cascade starts)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every stage's training time")
    ap.add_argument("--crops", type=int, default=4000, help="post-filter training pairs (fewer below --scale 0.5)")
    ap.add_argument("--only", default=None, help="comma-separated stages to run (the others are skipped)")
    ap.add_argument("--make-default", action="store_true", help="leave models/DEFAULT pointing at NAME")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args(argv)
    if a.measure_policy:
        sys.path.insert(0, T)
        return measure_policy(a)
    if not a.weights:
        raise SystemExit("--weights is required")
    default_path = os.path.join(ROOT, "models", "DEFAULT")
    before = open(default_path).read().strip()
    a.base = a.base or before
    if before == a.name:  # an earlier run was killed before it could point models/DEFAULT back
        before = a.base
    if a.base == a.name:
        raise SystemExit(f"--from must name an older bundle than {a.name}")
    if meta_of(a.base) is None:
        raise SystemExit(f"models/{a.base}/model.json not found")
    run = os.path.join(ROOT, "training", "runs", f"cascade-{a.name}")
    if not a.dry_run:
        os.makedirs(os.path.join(run, "pf"), exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    only = set(a.only.split(",")) if a.only else None
    todo = stages(a, run)
    unknown = (only or set()) - {n for n, _, _ in todo}
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; the stages are {[n for n, _, _ in todo]}")
    logf = None if a.dry_run else open(os.path.join(run, "cascade.log"), "a")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        if logf:
            logf.write(line + "\n")
            logf.flush()

    if not a.dry_run:
        probe = subprocess.run([PY, "-c", "import fastcodec, fastcodec._core; print(fastcodec.__file__)"],
                               env=env, capture_output=True, text=True)
        if probe.returncode or not probe.stdout.startswith(os.path.join(ROOT, "python")):
            raise SystemExit("the scripts need the package of this tree with its native core: build it "
                             "(README, 'Development') and link _core*.so and models into python/fastcodec")
    log(f"cascade {a.name} from {a.weights}, base {a.base}, scale {a.scale}")
    t_all = time.time()
    try:
        for name, done, cmds in todo:
            if only is not None and name not in only:
                continue
            meta = meta_of(a.name)
            if meta is not None and done(meta):  # (a dry run shows the stages still to do)
                log(f"{name}: done already")
                continue
            if name != "export" and meta is None and not a.dry_run:
                raise SystemExit(f"{name}: models/{a.name} does not exist yet (run the export stage)")
            if not a.dry_run and name != "export":
                with open(default_path, "w") as f:  # the scripts train against models/DEFAULT
                    f.write(a.name + "\n")
            t0 = time.time()
            for cmd in cmds:
                log(f"{name}: {shlex.join('python' if c == PY else os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)}")
                if a.dry_run:
                    continue
                with open(os.path.join(run, f"{name}.log"), "a") as out:
                    rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
                if rc:
                    raise SystemExit(f"{name} failed (exit {rc}); see {os.path.join(run, name + '.log')}")
            if not a.dry_run:
                meta = meta_of(a.name)
                if not done(meta):
                    raise SystemExit(f"{name}: finished, but models/{a.name}/model.json does not list its result")
            if not a.dry_run:
                log(f"{name}: done in {(time.time() - t0) / 60:.1f} min")
    finally:
        if not a.dry_run:
            with open(default_path, "w") as f:
                f.write((a.name if a.make_default else before) + "\n")
    if a.dry_run:
        return
    log(f"all stages done in {(time.time() - t_all) / 60:.1f} min; models/DEFAULT is "
        f"{a.name if a.make_default else before}")
    log("before it ships as the default: the golden files and fuzz seeds of the new model "
        "(tests/golden/make_golden.py, --bitexact too; fuzz/make_seeds.py), its id in docs/format.md, "
        "the RD bounds of tests/test_codec.py, then pytest (the decoder tests check the policy and the "
        "int8 graphs on Kodak), benchmarks/rd.py and the model card")


if __name__ == "__main__":
    main()
