#!/usr/bin/env bash
# Reproduces docs/digits-results.md: FID/KID of the shipped digits models against the data's own
# floor, FID against steps, and sample grids. CPU, 2 threads; about 25 minutes on 2 cores.
#
#   docs/digits-results.sh [OUT_DIR]     (default: results/digits-results)
#
# Protocol: n = 360 samples per cell against the digits train split (1,437 images, the metrics'
# default reference), digits-classifier features; the floor is the 360 real test images against
# the same reference (`bench fid-floor --split test --against train --n 360`), so model and floor
# share n and reference. Seeds 0-2 at 1,000 steps; FID against steps on seed 0.
set -euo pipefail
out=${1:-results/digits-results}
common=(--samples 360 --batch-size 360 --metrics fid,kid --threads 2 --no-progress --save-samples)

mkdir -p "$out"
bench fid-floor --split test --against train --n 360 --json > "$out/floor.json"
# The split-half floor at the same n: 360 real digits vs the disjoint other 1,437 (5 random splits).
bench fid-floor --n 360 --repeats 5 --json > "$out/floor-split-half.json"

# The paper's default samplers: VE reverse diffusion + Langevin (snr 0.16); VP and sub-VP
# Euler–Maruyama. VE also with Euler–Maruyama.
run() {  # model sde predictor corrector
    local dir="$out/$1-$3-$4"
    echo "$(date -u +%H:%M:%S) $1 $3+$4" >&2
    bench run --model "$1" --sdes "$2" --predictors "$3" --correctors "$4" --snr 0.16 \
        --steps 1000 --seeds 0-2 "${common[@]}" --out "$dir"
    bench run --model "$1" --sdes "$2" --predictors "$3" --correctors "$4" --snr 0.16 \
        --steps 10,30,100,300,1000 --seeds 0 "${common[@]}" --out "$dir"
}
run digits-ve ve reverse_diffusion langevin
run digits-ve ve euler_maruyama none
run digits-vp vp euler_maruyama none
run digits-subvp subvp euler_maruyama none
python docs/digits_grids.py "$out" --out docs/img
bench report "$out" --metric fid,kid --out "$out/report"
for m in ve vp subvp; do cp "$out/report/plots/fid_vs_nfe_digits-$m.png" "docs/img/fid-vs-nfe-digits-$m.png"; done
