#!/usr/bin/env bash
# Each sampler's loop against the bare forward on the digits UNet (docs/performance.md):
# bench profile on digits-vp, batch 64, 2 threads, for every built-in sampler at 20 steps.
#
#   docs/profile-samplers.sh [REPEATS]     (default 5)
set -euo pipefail
repeats=${1:-5}
for sampler in pc euler ddim heun dpmpp_2m dpmpp_3m unipc ipndm; do
    extra=()
    if [[ $sampler == pc ]]; then extra=(--predictor euler_maruyama --corrector none); fi
    echo "== $sampler" >&2
    bench profile --model digits-vp --sampler "$sampler" "${extra[@]}" --steps 20 \
        --batch-size 64 --threads 2 --repeats "$repeats" --calls 40 2>&1 | grep -E "sde_bench|bare_forward"
done
