#!/usr/bin/env bash
# Regenerates the shipped built-in checkpoint (models/builtin/atelier-tiny.*) with the runs that made
# it, in order. Each step is resumable: run the script again after an interruption and finished
# steps are skipped by their own resume logic. Measured on 2 CPU cores: VAE 38 min, v6 1 h 45 min,
# the last fine-tune 33 min; the batch-128 fine-tune ran on a GPU (8.9 steps/s) and was not timed on
# a CPU (pass --device cuda to use one).
# Not bit-identical to the shipped file: the batch-128 fine-tune ran on a GPU, and it started from
# v6's fp16 export where this reads v6's fp32 EMA weights (models/builtin/MODEL_CARD.md).
#
#     bash tools/regenerate_builtin.sh [--device cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
T=(tools/train_default_model.py "$@")
BASE=(--set offset_noise_from=0 --set pyramid_discount=0.5 --set high_t_fraction=0.25 --set mask_loss=1.0)

# 1. VAE (the v1 recipe, defaults), then v6 from scratch: step 5 000 of a 6 000-step schedule.
"$PY" "${T[@]}" --stage vae --run-dir runs/v6
"$PY" "${T[@]}" --stage diffusion --run-dir runs/v6 --stop-at-step 5000 \
    --set steps=6000 --set warmup=300 "${BASE[@]}" --set eval_every=1000
# 2. Batch 128 from v6: step 2 000 of a 5 000-step schedule (the GPU run's exported checkpoint).
mkdir -p runs/ft && { [ -f runs/ft/vae_state.pt ] || cp runs/v6/vae_state.pt runs/ft/; }
"$PY" "${T[@]}" --stage diffusion --run-dir runs/ft --init-from runs/v6 --stop-at-step 2000 \
    --set steps=5000 --set batch=128 --set lr=4e-4 --set warmup=200 "${BASE[@]}" \
    --set eval_every=2500 --set checkpoint_every=1000
# 3. 1 800 steps with 15 % of each batch on orange backgrounds, then the export.
mkdir -p runs/ftc && { [ -f runs/ftc/vae_state.pt ] || cp runs/ft/vae_state.pt runs/ftc/; }
"$PY" "${T[@]}" --stage diffusion --run-dir runs/ftc --init-from runs/ft \
    --set steps=1800 --set batch=64 --set lr=2e-4 --set warmup=100 "${BASE[@]}" \
    --set focus_background=orange --set focus_share=0.15 --set eval_every=1800 --set checkpoint_every=200
"$PY" "${T[@]}" --stage export --run-dir runs/ftc
