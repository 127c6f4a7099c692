#!/usr/bin/env bash
# The GPU evidence for attmask-pretrain in ONE call on a lent GPU machine (a session gets about 15 minutes
# of device time in all, machine start included, and at most 10 minutes per command).
#
#   here:    bash benchmarks/device_run.sh --prepare     # copies $ATTMASK_DATA/cifar10-mini to carry/data (git-ignored, 48 MB)
#   device:  command "bash benchmarks/device_run.sh", carry ["carry"], timeout_s 560
#            knobs (environment): STRATEGIES (default: all five), EPOCHS (100), TIME_LIMIT_S (400),
#            AUGMENT (device: crops made on the GPU, pretrain/batch_augment.py; loader: the PIL pipeline in
#            loader workers, which needs about 2,100 CPU core-seconds per 100-epoch run), WORKERS (loader workers
#            per run; default 2 with AUGMENT=device, else 16 / number of runs);
#            VARIANTS ("NAME STRATEGY KEY=VALUE ...; NAME ..." : extra runs with their own overrides, no spaces
#            inside a value; STRATEGIES is empty when VARIANTS is set), e.g. the ablation that traced the first runs'
#            gap to the reference to the CLS teacher temperature (benchmarks/results/h200-2026-11-27-ablation/):
#              VARIANTS="rand_t07 rand teacher_temp=0.07; rand_m099 rand teacher_temp=0.07 momentum_teacher=0.99"
#            Timing on one H200: the five strategies at once run at about 1,930 images/s each, 100 epochs in about
#            520 s: TIME_LIMIT_S=400 (about 75 epochs), then a second call without carry, timeout_s 200, finishes
#            them; three runs at once, about 3,950 images/s each (100 epochs in about 260 s);
#            DEVICE=cpu STEP=0 EXTRA="subset=20 ..." make a quick dry run on this machine with .venv/bin first on PATH
#   back:    cp -r <files_at>/pretrain_cifar runs/ && tar xzf runs/pretrain_cifar/logs.tar.gz -C runs/pretrain_cifar &&
#            .venv/bin/python benchmarks/pretrain_cifar.py --report-only --out runs/pretrain_cifar --strategies <the runs>
#                [--variant NAME STRATEGY]   (table, training state + the PNG, from the logs and each run's config.yaml)
#   more:    a second call WITHOUT carry (the warm machine keeps carry/runs) and EXTRA unchanged continues the
#            stopped runs exactly (pretrain_cifar.py passes --resume to unfinished runs): STEP=0 bash benchmarks/device_run.sh
#
# What it does there (Python 3.12, torch, timm, numpy, scikit-learn; no faiss, tensorboard, matplotlib or mm*):
#  1. installs the project offline (pip --no-deps --no-build-isolation -e .);
#  2. benchmarks/pretrain_cifar.py for $STRATEGIES at once on the one GPU (the cifar10-mini benchmark setting:
#     192-d, 4 blocks, patch 4, 2 x 32 + 6 x 16 px, batch 256, $EPOCHS epochs, teacher k-NN every 10 epochs),
#     stopped after $TIME_LIMIT_S seconds: a stopped run's curve so far (the first epochs of the full schedule)
#     is still a result; the logs are copied to $OUT every 15 s, so even a call cut short returns them;
#  3. benchmarks/pretrain_step.py --setting gpu: ViT-S/16, batch 64, 2 x 224 + 10 x 96 px, fp16 — step time with
#     random vs AttMask-High masking (the AttMask overhead) and the CLS-row vs materialised attention cost;
#  4. leaves the small results in $OUT (7 files; a call returns at most 8): device.txt, pretrain_cifar.txt,
#     pretrain_step_gpu.{txt,json}, pretrain_cifar/*.{md,json} and pretrain_cifar/logs.tar.gz (each run's
#     log.jsonl / train.out / config.yaml; checkpoints stay on the machine, where a second call can --resume them).
set -uo pipefail

if [[ "${1:-}" == "--prepare" ]]; then
    : "${ATTMASK_DATA:?set ATTMASK_DATA to the shared data folder}"
    src="$ATTMASK_DATA/cifar10-mini"
    [[ -d "$src/train" && -d "$src/test" ]] || { echo "device_run.sh: $src: no train/ and test/ folders" >&2; exit 2; }
    mkdir -p carry/data
    rm -rf carry/data/cifar10-mini carry/runs carry/cache
    cp -r "$src" carry/data/
    echo "carry/data/cifar10-mini: $(find carry/data/cifar10-mini -type f | wc -l) files, $(du -sh carry/data | cut -f1)"
    exit 0
fi

: "${OUT:?OUT (the folder whose files come back) is not set: run this on the device machine}"
VARIANTS=${VARIANTS:-}
if [[ -n "$VARIANTS" ]]; then STRATEGIES=${STRATEGIES:-}; else STRATEGIES=${STRATEGIES:-"attmask_high attmask_hint attmask_low rand block"}; fi
EPOCHS=${EPOCHS:-100}
TIME_LIMIT_S=${TIME_LIMIT_S:-400}
AUGMENT=${AUGMENT:-device}
DEVICE=${DEVICE:-cuda}
STEP=${STEP:-1}
read -r -a extra <<< "${EXTRA:-}"
read -r -a strategies <<< "$STRATEGIES"
variant_args=()
names=("${strategies[@]}")
IFS=';' read -r -a variants <<< "$VARIANTS"
for v in "${variants[@]}"; do
    read -r -a words <<< "$v"
    [[ ${#words[@]} -ge 2 ]] || continue
    variant_args+=(--variant "${words[@]}")
    names+=("${words[0]}")
done
[[ ${#names[@]} -ge 1 ]] || { echo "device_run.sh: no runs (STRATEGIES and VARIANTS are empty)" >&2; exit 2; }
strategy_args=()
[[ ${#strategies[@]} -ge 1 ]] && strategy_args=(--strategies "${strategies[@]}")
if [[ "$AUGMENT" == device ]]; then default_workers=2; else default_workers=$(( 16 / ${#names[@]} > 1 ? 16 / ${#names[@]} : 1 )); fi
WORKERS=${WORKERS:-$default_workers}
export ATTMASK_DATA="$PWD/carry/data"
export ATTMASK_CACHE="$PWD/carry/cache"
[[ -d "$ATTMASK_DATA/cifar10-mini/train" ]] || { echo "device_run.sh: $ATTMASK_DATA/cifar10-mini missing: run --prepare here and carry [\"carry\"]" >&2; exit 2; }

t0=$(date +%s)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 --version
  python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"; nproc; } > "$OUT/device.txt" 2>&1
python3 -m pip install -q --no-deps --no-build-isolation -e . > /tmp/attmask-install.txt 2>&1 || { cat /tmp/attmask-install.txt; exit 1; }
echo "installed in $(( $(date +%s) - t0 )) s"

runs="$PWD/carry/runs/pretrain_cifar"
collect() {  # a call returns at most 8 files: the runs' logs travel as one tar
    mkdir -p "$OUT/pretrain_cifar"
    cp "$runs"/*.md "$runs"/*.json "$OUT/pretrain_cifar/" 2>/dev/null
    (cd "$runs" 2>/dev/null && tar czf "$OUT/pretrain_cifar/logs.tar.gz.part" */log.jsonl */train.out */config.yaml 2>/dev/null \
        && mv "$OUT/pretrain_cifar/logs.tar.gz.part" "$OUT/pretrain_cifar/logs.tar.gz")
}
( while sleep 15; do collect; done ) &
collector=$!
python3 benchmarks/pretrain_cifar.py --out "$runs" "${strategy_args[@]}" --jobs "${#names[@]}" \
    --device "$DEVICE" --epochs "$EPOCHS" --time-limit "$TIME_LIMIT_S" tensorboard=false "num_workers=$WORKERS" \
    "augment_on=$AUGMENT" "${extra[@]}" "${variant_args[@]}" 2>&1 | tee "$OUT/pretrain_cifar.txt"
kill "$collector" 2>/dev/null
collect
echo "pre-training done at $(( $(date +%s) - t0 )) s"

if [[ "$STEP" == 1 ]]; then
    timeout 100 python3 benchmarks/pretrain_step.py --setting gpu --device "$DEVICE" --steps 30 \
        --json "$OUT/pretrain_step_gpu.json" > "$OUT/pretrain_step_gpu.txt" 2>&1
    echo "pretrain_step (exit $?):"; cat "$OUT/pretrain_step_gpu.txt"
fi
echo "done in $(( $(date +%s) - t0 )) s"
