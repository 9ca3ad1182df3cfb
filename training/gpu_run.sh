#!/bin/bash
# One-shot training run on a lent CUDA machine (see README "Training"): the training photos
# travel as .gpudata/ (training/pack_data.py), the result comes back as $OUT/weights.npz.
# Environment: INIT (weights to resume or warm-start from), ARCH (hp or lite; a new
# architecture is warm-started from INIT's matching tensors), DECAY (final fraction at lr/10),
# WEVERY (seconds between weight writes), BATCH (crops per step, default 32; measured
# 0.026 s/step on an H100, 1.7x the crops per second of batch 16 at 0.022 s), COMPILE (any
# value: torch.compile the forward pass; not yet measured on a GPU), GUARD (auto: the divergence
# guard decides on the GPU, so no step waits for the device; "host" restores the per-step loss
# read of sessions 3-4, the only mode measured on a GPU so far), EMA (a decay such as 0.999:
# weights.npz then holds the moving average of the parameters; on the CPU it removed the noise of
# a small-batch run at a high learning rate, see the model card).
SECS=${1:-500}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, numpy, PIL; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
ls .gpudata | wc -l
mkdir -p /tmp/run
PYTHONUNBUFFERED=1 python3 training/train.py --data .gpudata --ckpt /tmp/run/ckpt.pt \
  --init "${INIT:-models/$(cat models/DEFAULT).weights.npz}" ${ARCH:+--arch "$ARCH"} ${COMPILE:+--compile} --guard "${GUARD:-auto}" ${EMA:+--ema "$EMA"} --batch "${BATCH:-32}" --seconds "$SECS" --decay-frac "${DECAY:-0.15}" \
  --save-every 5000 --log-every 250 --threads 8 \
  --weights-out "$OUT/weights.npz" --weights-every "${WEVERY:-60}" 2>&1 | tee "$OUT/train.log"
