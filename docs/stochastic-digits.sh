#!/usr/bin/env bash
# SDE against ODE on the shipped digits models (docs/stochastic.md): FID and KID against NFE at
# 10 to 1,000 NFE for the best ODE solver (dpmpp_2m), the stochastic samplers and the paper's
# Euler–Maruyama, on digits-vp, digits-ve and digits-subvp; then each sampler's noise option
# (eta, tau, churn) and the schedule on digits-vp. CPU, 1 thread; about 3 hours on the 2-core VM
# (the docs' run took seed 1 in a second process beside seed 0, about 100 minutes).
#
#   docs/stochastic-digits.sh [OUT_DIR]     (default: results/stochastic-digits)
#
# Protocol as docs/digits-results.md: n = 360 samples per cell against the digits train split
# (digits-classifier features); the floor is the 360 real test images against the same reference.
# Seed 0 on every model first, then the noise options, then seed 1. Every sampler on its own
# default schedule and noise (Brownian paths for the stochastic ones). Restart's steps give NFE
# 2N + 7, close to the others' N.
set -euo pipefail
out=${1:-results/stochastic-digits}
common=(--samples 360 --batch-size 360 --metrics fid,kid --threads 1 --no-progress)
mkdir -p "$out"
bench fid-floor --split test --against train --n 360 --json > "$out/floor.json"

sweep() {  # model seed
    local dir="$out/digits-$1"
    echo "$(date -u +%H:%M:%S) digits-$1 seed $2" >&2
    bench run --model "digits-$1" --seeds "$2" --out "$dir" "${common[@]}" \
        --samplers dpmpp_2m,euler_ancestral,dpmpp_2m_sde,dpmpp_3m_sde,sa_solver,er_sde \
        --steps 10,30,100,300,1000
    bench run --model "digits-$1" --seeds "$2" --out "$dir" "${common[@]}" \
        --samplers restart --steps 2,12,47,147,497
    bench run --model "digits-$1" --seeds "$2" --out "$dir" "${common[@]}" \
        --samplers pc --predictors euler_maruyama --correctors none --steps 10,30,100,300,1000
}

option() {  # sampler key value steps [more -o options]
    echo "$(date -u +%H:%M:%S) digits-vp $1 $2=$3" >&2
    bench run --model digits-vp --seeds 0 --out "$out/options/$1-$2-$3" "${common[@]}" \
        --samplers "$1" --steps "$4" -o "sampler.$1.$2=$3" "${@:5}"
}

for m in vp ve subvp; do sweep "$m" 0; done
for v in 0 0.5; do
    option euler_ancestral eta "$v" 10,30,100
    option dpmpp_2m_sde eta "$v" 10,30,100
    option sa_solver tau "$v" 10,30,100
done
# VP cannot be evaluated above T: churn from the first step needs EDM's cap on sigma-hat
for v in 0 10 40; do option heun s_churn "$v" 5,15,50 -o sampler.heun.clamp=true; done
# four stochastic samplers on the three schedules (the default grid is part of each sampler)
bench run --model digits-vp --seeds 0 --out "$out/schedules-vp" "${common[@]}" \
    --samplers sa_solver,dpmpp_2m_sde,euler_ancestral,er_sde --schedules logsnr,edm,uniform \
    --steps 10,30,100
for m in vp ve subvp; do sweep "$m" 1; done
for m in vp ve subvp; do bench report "$out/digits-$m" --metric fid,kid >/dev/null; done
