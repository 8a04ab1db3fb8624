#!/usr/bin/env bash
# SDE against ODE on the exact oracles (docs/stochastic.md): ring8 and gmm64 under VP, the ODE
# solvers beside the stochastic samplers and the paper's Euler–Maruyama at 10–200 steps (3 seeds),
# then each stochastic sampler's noise option (eta, tau, churn, the ER-SDE noise scale) at 10, 20
# and 50 steps, and three of them on each schedule. CPU, 1 thread; about 15 minutes on the 2-core VM.
#
#   docs/stochastic-oracles.sh [OUT_DIR]     (default: results/stochastic-oracles)
set -euo pipefail
out=${1:-results/stochastic-oracles}
common=(--sdes vp --seeds 0-2 --threads 1 --no-progress)
mkdir -p "$out"

for m in ring8 gmm64; do
    echo "$(date -u +%H:%M:%S) $m" >&2
    bench run --model "$m" --out "$out/$m" "${common[@]}" --steps 10,20,50,100,200 \
        --samplers euler,heun,dpmpp_2m,euler_ancestral,dpmpp_2m_sde,dpmpp_3m_sde,sa_solver,er_sde,restart,pc \
        --predictors euler_maruyama --correctors none
done

option() {  # model sampler key value [more -o options]
    bench run --model "$1" --out "$out/options-$1/$2-$3-$4" "${common[@]}" --steps 10,20,50 \
        --samplers "$2" -o "sampler.$2.$3=$4" "${@:5}"
}
for m in ring8 gmm64; do
    echo "$(date -u +%H:%M:%S) $m noise options" >&2
    for v in 0 0.5 1; do
        option "$m" euler_ancestral eta "$v"
        option "$m" dpmpp_2m_sde eta "$v"
        option "$m" dpmpp_3m_sde eta "$v"
        option "$m" sa_solver tau "$v"
    done
    for v in 0 10 40 80; do option "$m" heun s_churn "$v" -o sampler.heun.clamp=true; done
    for v in sde_1 sde_2 sde_3 sde_4 sde_5 ode; do option "$m" er_sde scale "$v"; done
    for k in 1 2 4; do option "$m" restart intervals "[[3,$k,0.14,0.30]]"; done
done

# the same samplers on the three grids: how much of the ranking is the schedule
for m in ring8 gmm64; do
    echo "$(date -u +%H:%M:%S) $m schedules" >&2
    bench run --model "$m" --out "$out/schedules-$m" "${common[@]}" --steps 10,20,50 \
        --samplers sa_solver,dpmpp_2m_sde,euler_ancestral --schedules uniform,logsnr,edm
done
