#!/usr/bin/env bash
# docs/flow.md: digits-flow beside digits-vp, FID and KID against NFE on the same samplers, steps,
# seeds and n, and each model's best setting. CPU, 1 thread.
#
#   docs/flow-digits.sh [OUT_DIR]     (default: results/flow-digits)
#
# Protocol as docs/digits-results.md: n = 360 samples per cell against the digits train split
# (digits-classifier features), seeds 0-2; the floor is the 360 real test images against the same
# reference. The ODE samplers run on their own default schedules (euler, heun: edm; dpmpp_2m,
# unipc: logsnr) and on the shift schedule with s = 1 (uniform in t, diffusers' flow-matching
# default grid) and, to compare the networks on one grid, on edm's ρ = 7 grid over VP's noise
# range σ̃ = std/a ∈ [0.010486, 152.16] for both models (the samplers step in σ̃, so the two get the
# same grid), and on flow's uniform-t grid over VP's range (files of σ̃'s); heun's 3, 5, 10, 25
# steps spend 5, 9, 19, 49 NFE. Euler-Maruyama (the paper's SDE sampler) at 100 and 300 steps
# gives each model's best FID.
set -euo pipefail
out=${1:-results/flow-digits}
common=(--samples 360 --batch-size 360 --metrics fid,kid --threads 1 --seeds 0-2 --no-progress)
mkdir -p "$out"
bench fid-floor --split test --against train --n 360 --json > "$out/floor.json"
for m in flow vp; do
    echo "$(date -u +%H:%M:%S) digits-$m" >&2
    for s in default shift1 vprange; do
        dir="$out/$s/digits-$m"
        case $s in
            default) sched=() ;;
            shift1) sched=(--schedules shift -o schedule.shift.shift=1) ;;
            vprange) sched=(--schedules edm -o schedule.edm.sigma_min=0.010486
                            -o schedule.edm.sigma_max=152.16) ;;
        esac
        bench run --model "digits-$m" --samplers euler,dpmpp_2m,unipc --steps 5,10,20,50 \
            "${sched[@]}" "${common[@]}" --out "$dir"
        bench run --model "digits-$m" --samplers heun --steps 3,5,10,25 \
            "${sched[@]}" "${common[@]}" --out "$dir"
    done
    # flow's uniform-t grid as noise levels σ̃ = t/(1 − t), its two ends moved to VP's range, for
    # both models: the grid flow samples on by default, with the network as the only difference
    for n in 3 5 10 20; do
        grid="$out/flowgrid-$n.txt"
        python -c "import numpy as np, sys; n = int(sys.argv[1]); t = np.linspace(0.999, 0.001, n)
s = t / (1 - t); s[0], s[-1] = 152.16, 0.010486; print('sigma'); print(*s, sep='\n')" "$n" > "$grid"
        samplers=euler,dpmpp_2m,unipc
        [ "$n" = 3 ] && samplers=heun
        [ "$n" = 20 ] || [ "$n" = 3 ] || samplers=$samplers,heun
        bench run --model "digits-$m" --samplers "$samplers" --schedules "file:$grid" \
            "${common[@]}" --out "$out/flowgrid/digits-$m"
    done
    bench run --model "digits-$m" --samplers pc --predictors euler_maruyama --correctors none \
        --steps 100,300 "${common[@]}" --save-samples --out "$out/em/digits-$m"
done
for dir in "$out"/*/digits-*; do
    bench report "$dir" --metric fid,kid >/dev/null
done
# sample grids (docs/img): dpmpp_2m at 10 steps on the shift s = 1 grid, seed 0, both models;
# digits-flow's Euler-Maruyama at 300 steps
for m in flow vp; do
    bench run --model "digits-$m" --samplers dpmpp_2m --schedules shift -o schedule.shift.shift=1 \
        --steps 10 --samples 360 --batch-size 360 --seeds 0 --metrics none --threads 1 \
        --no-progress --save-samples --out "$out/grid/digits-$m"
done
python - "$out" <<'PY'
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, "docs")
from digits_grids import save_grid  # noqa: E402

from bench.results.sample_plots import load_samples  # noqa: E402

out = Path(sys.argv[1])
for run, query, name, title in [
    ("grid/digits-flow", "steps == 10", "flow-dpmpp_2m", "digits-flow: dpmpp_2m, shift s=1, N=10"),
    ("grid/digits-vp", "steps == 10", "vp-dpmpp_2m", "digits-vp: dpmpp_2m, shift s=1, N=10"),
    ("em/digits-flow", "steps == 300 and seed == 0", "flow-em", "digits-flow: Euler-Maruyama, N=300"),
]:
    cell = pd.read_csv(out / run / "results.csv").query(query).iloc[0]
    samples = load_samples(out / run / "samples", cell.cell_id)
    save_grid(samples, Path("docs/img") / f"flow-digits-{name}.png", title)
PY
