#!/usr/bin/env bash
# Reproduces the tables of docs/guidance.md: samplers under classifier-free guidance on the exact
# conditional oracle (ring8-cond) and on the shipped digits-cond network. CPU, one thread.
#
#   docs/guidance.sh [OUT_DIR] [oracle|digits|all]     (default: results/guidance all)
#
# Oracle: each sampler's error to the guided probability-flow solution from the same x_T and
# label (ode_err, a tight-tolerance DOP853 solve) and the sliced Wasserstein distance to such
# solutions from other seeds (swd, with its floor), n = 1,000, seeds 0-2. Digits: FID against
# the class-balanced train split and the digits classifier's accuracy on the requested class,
# n = 500 (50 per class), seeds 0-2.
set -euo pipefail
out=${1:-results/guidance}
what=${2:-all}
mkdir -p "$out"
oracle=(--model ring8-cond --sdes vp --seeds 0-2 --samples 1000 --batch-size 1000
        --metrics ode_err,swd --threads 1 --no-progress)
solvers=euler,heun,ddim,dpmpp_2m,dpmpp_3m,unipc,ipndm

if [[ $what == oracle || $what == all ]]; then
    # Every deterministic solver at 10 and 20 steps, s = 1, 2, 4, 8.
    bench run "${oracle[@]}" --samplers "$solvers" --steps 10,20 --guidance 1,2,4,8 \
        --out "$out/oracle"
    # The multistep solvers without lowering their order at the end (lower_order_final=off).
    bench run "${oracle[@]}" --samplers dpmpp_2m,dpmpp_3m,unipc --steps 10,20 --guidance 1,4,8 \
        -o sampler.dpmpp_2m.lower_order_final=off -o sampler.dpmpp_3m.lower_order_final=off \
        -o sampler.unipc.lower_order_final=off --out "$out/oracle-no-lower-order-final"
    # Guidance only for sigma in (0.3, 5] (Kynkaanniemi et al. 2024).
    bench run "${oracle[@]}" --samplers "$solvers" --steps 10,20 --guidance 4,8 \
        --guidance-interval 0.3,5 --out "$out/oracle-interval"
fi
if [[ $what == digits || $what == all ]]; then
    bench run --model digits-cond --samplers dpmpp_2m,unipc,heun,ddim --steps 10,20 \
        --guidance 1,2,4,8 --seeds 0-2 --samples 500 --batch-size 500 --threads 1 \
        --no-progress --out "$out/digits-cond"
    # The converged limit of each scale: DPM-Solver++(2M) at 100 steps.
    bench run --model digits-cond --samplers dpmpp_2m --steps 100 --guidance 1,2,4,8 --seeds 0-2 \
        --samples 500 --batch-size 500 --threads 1 --no-progress --out "$out/digits-cond-100"
fi
bench report "$out" --out "$out/report"
