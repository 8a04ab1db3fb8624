#!/usr/bin/env bash
# The solvers on the shipped digits models (docs/solvers.md): FID and KID against NFE at about
# 5, 10, 20 and 50 NFE, and the paper's samplers at 100–2,000 NFE (Euler–Maruyama at 100–2,000 steps,
# reverse diffusion + Langevin at 1,000). CPU, 2 threads.
#
#   docs/solvers-digits.sh [OUT_DIR]     (default: results/solvers-digits)
#
# Protocol as docs/digits-results.md: n = 360 samples per cell against the digits train split
# (digits-classifier features), seeds 0-2; the floor is the 360 real test images against the same
# reference. Every solver runs on its own default schedule (edm: euler, heun, ipndm; logsnr:
# dpmpp_2m, dpmpp_3m, unipc; quadratic: ddim); heun's steps give NFE 5, 9, 19 and 49.
set -euo pipefail
out=${1:-results/solvers-digits}
common=(--samples 360 --batch-size 360 --metrics fid,kid --threads 2 --seeds 0-2 --no-progress)
mkdir -p "$out"
bench fid-floor --split test --against train --n 360 --json > "$out/floor.json"
for m in ve vp subvp; do
    dir="$out/digits-$m"
    echo "$(date -u +%H:%M:%S) digits-$m" >&2
    bench run --model "digits-$m" --samplers euler,ddim,dpmpp_2m,dpmpp_3m,unipc,ipndm \
        --steps 5,10,20,50 "${common[@]}" --out "$dir"
    bench run --model "digits-$m" --samplers heun --steps 3,5,10,25 "${common[@]}" --out "$dir"
    bench run --model "digits-$m" --samplers pc --predictors euler_maruyama --correctors none \
        --steps 100,300,1000,2000 "${common[@]}" --out "$dir"
    bench run --model "digits-$m" --samplers pc --predictors reverse_diffusion --correctors langevin \
        --steps 1000 "${common[@]}" --out "$dir"
done
# the same samplers at 5 and 10 steps on every schedule: how much of the few-step ranking is the schedule
for m in vp subvp; do
    bench run --model "digits-$m" --samplers euler,ddim,dpmpp_2m,unipc \
        --schedules uniform,quadratic,logsnr,edm --steps 5,10 "${common[@]}" --out "$out/schedules-$m"
done
for m in ve vp subvp; do
    bench report "$out/digits-$m" --metric fid,kid --baseline-sampler unipc >/dev/null
done
for m in vp subvp; do
    bench report "$out/schedules-$m" --metric fid,kid --baseline-sampler 'unipc[quadratic]' >/dev/null
done
