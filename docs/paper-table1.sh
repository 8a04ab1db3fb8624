#!/usr/bin/env bash
# The paper's Table 1 (Song et al. 2021: P1000, P2000, C2000 and PC1000 for reverse diffusion,
# ancestral sampling and the probability-flow predictor) on what ships: the digits models
# (VE, VP: the paper's two SDEs) and the exact oracles ring8 and gmm64; every sampler at the
# paper's SNR 0.16 and at the SNR `bench tune-snr` chooses. Writes OUT/table1.md (the tables and
# the paper's claims, each judged on paired differences over seeds) for docs/paper-table1.md.
#
#   docs/paper-table1.sh [OUT_DIR]      (default: results/paper-table1)
#
# Protocol (override with the variables below; about 30 minutes on an idle 2-core CPU):
#   digits-ve, digits-vp  n = 64 samples per cell, seeds 0-1, FID and KID (digits classifier,
#                         against the train split); two models at a time, 1 thread each
#   ring8                 n = 1000, seeds 0-4, swd and logp_gap (exact), VE and VP
#   gmm64                 n = 500, seeds 0-2, swd and logp_gap (exact), VE and VP
# Every seed fixes each sample's prior noise and the step noise, so the samplers of one model
# are compared on common random numbers. C2000 = the Langevin corrector alone, 2 steps per noise
# level at N = 1000 (App. G); P2000 = the predictor at N = 2000 (continuous models: any N).
# The tuned SNR is searched for reverse diffusion + Langevin (PC1000) and for C2000 on each SDE
# with `bench tune-snr` in the same run folder (cells shared with the 0.16 runs), and used for
# the three predictors' PC1000 (the paper's Table 5 tuned each; its optima differ by ≤ 0.01).
set -euo pipefail
out=${1:-results/paper-table1}
N1=${N1:-1000}
N2=$((2 * N1))
DIGITS_N=${DIGITS_N:-64} DIGITS_SEEDS=${DIGITS_SEEDS:-0-1}
RING_N=${RING_N:-1000} RING_SEEDS=${RING_SEEDS:-0-4}
GMM_N=${GMM_N:-500} GMM_SEEDS=${GMM_SEEDS:-0-2}
MODELS=${MODELS:-"digits-ve digits-vp ring8 gmm64"}
mkdir -p "$out"

# model sdes n seeds metrics coarse budget-in-snrs
table() {
    local model=$1 sdes=$2 n=$3 seeds=$4 metrics=$5 coarse=$6 snrs=$7 dir="$out/$1"
    local k
    k=$(python -c "import sys; from bench.run.grid import parse_seeds as p; print(len(p(sys.argv[1])))" "$seeds")
    local common=(--model "$model" --sdes "$sdes" --samples "$n" --batch-size "$n" --seeds "$seeds"
        --metrics "$metrics" --threads 1 --no-progress --out "$dir")
    local log="$dir.log"
    echo "$(date -u +%H:%M:%S) $model: start (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    {
        # P1000, P2000: predictor only; the probability-flow predictor is reverse diffusion's
        bench run "${common[@]}" --predictors rd,ancestral --correctors none --steps "$N1,$N2"
        bench run "${common[@]}" --predictors rd --probability-flow --correctors none --steps "$N1,$N2"
        # PC1000 and C2000 at the paper's SNR
        bench run "${common[@]}" --predictors rd,ancestral --correctors langevin --snr 0.16 --steps "$N1"
        bench run "${common[@]}" --predictors rd --probability-flow --correctors langevin --snr 0.16 --steps "$N1"
        bench run "${common[@]}" --predictors none --correctors langevin --corrector-steps 2 --snr 0.16 --steps "$N1"
        for sde in ${sdes//,/ }; do
            tune=("${common[@]}" --sdes "$sde" --steps "$N1" --coarse "$coarse" --include 0.16
                --budget $((snrs * k)) --baselines none --json)
            bench tune-snr "${tune[@]}" --predictors rd >"$dir-tune-$sde-pc.json"
            bench tune-snr "${tune[@]}" --predictors none --corrector-steps 2 >"$dir-tune-$sde-c.json"
            snr=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))[0]['chosen'])" "$dir-tune-$sde-pc.json")
            bench run "${common[@]}" --sdes "$sde" --predictors ancestral --correctors langevin --snr "$snr" --steps "$N1"
            bench run "${common[@]}" --sdes "$sde" --predictors rd --probability-flow --correctors langevin --snr "$snr" --steps "$N1"
        done
    } >"$log" 2>&1
    echo "$(date -u +%H:%M:%S) $model: done (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
}

start=$(date +%s)
running=0
for model in $MODELS; do
    case $model in
    digits-ve) table digits-ve ve "$DIGITS_N" "$DIGITS_SEEDS" fid,kid 0.04,0.08,0.16 3 & ;;
    digits-vp) table digits-vp vp "$DIGITS_N" "$DIGITS_SEEDS" fid,kid 0.04,0.08,0.16 3 & ;;
    ring8) table ring8 ve,vp "$RING_N" "$RING_SEEDS" swd,logp 0.01,0.02,0.04,0.08,0.16,0.32 12 & ;;
    gmm64) table gmm64 ve,vp "$GMM_N" "$GMM_SEEDS" swd,logp 0.04,0.08,0.16,0.32 4 & ;;
    *) echo "unknown model $model" >&2 && exit 2 ;;
    esac
    # two models at a time (one thread each): the digits pair, then the oracles
    if [ $((++running)) -eq 2 ]; then wait; running=0; fi
done
wait
echo "total: $(( ($(date +%s) - start) / 60 )) min" | tee "$out/time.txt" >&2

python - "$out" "$N1" <<'EOF'
"""Table 1 per model, SDE and metric, and the paper's claims on paired differences over seeds."""
import json, math, sys
from pathlib import Path

import pandas as pd

from bench.results.stats import ci_halfwidth

out, N1 = Path(sys.argv[1]), int(sys.argv[2])
METRICS = {"digits": ("fid", "kid"), "oracle": ("swd", "logp_gap")}
PRED = {"reverse diffusion": ("reverse_diffusion", False), "ancestral sampling": ("ancestral_sampling", False), "probability flow": ("reverse_diffusion", True)}


def tuned(model, sde, kind):
    path = out / f"{model}-tune-{sde}-{kind}.json"
    return json.loads(path.read_text())[0] if path.is_file() else None


def pick(f, pred, pf, corrector, steps, snr=None, csteps=1):
    rows = f[(f.predictor == pred) & (f.corrector == corrector) & (f.steps == steps)]
    if pred != "none":
        rows = rows[rows.probability_flow.fillna(False).astype(bool) == pf]
    if corrector != "none":
        rows = rows[(rows.corrector_steps == csteps) & ((rows.snr - snr).abs() < 1e-9)]
    return rows.set_index("seed")


def cell(rows, metric):
    ok = rows[rows.status == "ok"][metric].dropna()
    if len(rows) and (rows.status == "diverged").any():
        return "diverged"
    if ok.empty:
        return "–"
    ci = ci_halfwidth(list(ok))
    return f"{ok.mean():.4g}" + ("" if math.isnan(ci) else f" ± {ci:.2g}")


def floor(f, metric):
    """What exact samples (oracles) or real data (digits) score at this n: the metric's floor."""
    for mean, sd in ((f"{metric}_floor", f"{metric}_floor_std"), (f"{metric}_ref", f"{metric}_ref_std")):
        if mean in f and sd in f and pd.api.types.is_numeric_dtype(f[mean]):
            m, s = f[mean].dropna(), f[sd].dropna()
            if len(m):
                return f"Floor of {metric} at this n (exact samples or real data): {m.iloc[0]:.4g} (sd {s.iloc[0]:.2g})."
    return f"(no floor recorded for {metric})"


def paired(a, b, metric):
    seeds = sorted(set(a.index) & set(b.index))
    d = [a.loc[s, metric] - b.loc[s, metric] for s in seeds if a.loc[s, "status"] == b.loc[s, "status"] == "ok"]
    if not d:
        return math.nan, math.nan, 0
    return sum(d) / len(d), ci_halfwidth(d), len(d)


def verdict(diff, ci, lower_better=True):
    """Claim 'a better than b' for diff = a − b."""
    if math.isnan(diff):
        return "no data"
    if math.isnan(ci):
        return "one seed"
    better = diff + ci < 0 if lower_better else diff - ci > 0
    worse = diff - ci > 0 if lower_better else diff + ci < 0
    return "holds" if better else ("contradicted" if worse else "inconclusive")


lines = ["# Table 1 on what ships (generated by docs/paper-table1.sh)", ""]
time_txt = (out / "time.txt").read_text().strip() if (out / "time.txt").is_file() else ""
lines += [f"Run time: {time_txt}.", ""]
for folder in sorted(p for p in out.iterdir() if p.is_dir()):
    f = pd.read_csv(folder / "results.csv")
    model = folder.name
    for sde in sorted(f.sde.unique()):
        fs = f[f.sde == sde]
        pc_t, c_t = tuned(model, sde, "pc"), tuned(model, sde, "c")
        s_pc = pc_t["chosen"] if pc_t else 0.16
        s_c = c_t["chosen"] if c_t else 0.16
        n, seeds = int(fs.samples.iloc[0]), sorted(fs.seed.unique())
        lines += [f"## {model}, {sde.upper()} (n = {n}, seeds {seeds[0]}–{seeds[-1]})", ""]
        for label, t in (("PC1000", pc_t), ("C2000", c_t)):
            if t:
                lo, hi = t["plausible"]
                lines.append(f"- tuned SNR, {label}: **{t['chosen']:g}** ({t['metric']}; not significantly worse: {lo:g}–{hi:g}; stopped: {t['stop']}; {t['cells']} cells)")
        lines.append("")
        kinds = METRICS["digits" if model.startswith("digits") else "oracle"]
        for metric in kinds:
            lines += [f"**{metric}** (mean ± 95 % CI over seeds)", "",
                      f"| predictor | P{N1} | P{2*N1} | C{2*N1} (0.16) | PC{N1} (0.16) | C{2*N1} (tuned {s_c:g}) | PC{N1} (tuned {s_pc:g}) |",
                      "|---|---|---|---|---|---|---|"]
            c16, ct = pick(fs, "none", False, "langevin", N1, 0.16, 2), pick(fs, "none", False, "langevin", N1, s_c, 2)
            for name, (pred, pf) in PRED.items():
                row = [cell(pick(fs, pred, pf, "none", N1), metric), cell(pick(fs, pred, pf, "none", 2 * N1), metric),
                       cell(c16, metric), cell(pick(fs, pred, pf, "langevin", N1, 0.16), metric),
                       cell(ct, metric), cell(pick(fs, pred, pf, "langevin", N1, s_pc), metric)]
                lines.append(f"| {name} | " + " | ".join(row) + " |")
            lines += ["", floor(fs, metric), "", f"Claims on {metric} (paired difference a − b over seeds, ± 95 % CI; lower is better):", "",
                      "| claim | predictor | a − b | verdict |", "|---|---|---|---|"]
            rd1, rd2 = pick(fs, "reverse_diffusion", False, "none", N1), pick(fs, "reverse_diffusion", False, "none", 2 * N1)
            for name, (pred, pf) in PRED.items():
                p1, p2 = pick(fs, pred, pf, "none", N1), pick(fs, pred, pf, "none", 2 * N1)
                for snr in dict.fromkeys((0.16, s_pc)):
                    pc = pick(fs, pred, pf, "langevin", N1, snr)
                    d, ci, _ = paired(pc, p2, metric)
                    lines.append(f"| PC{N1} (snr {snr:g}) beats P{2*N1} at equal NFE | {name} | {d:+.3g} ± {ci:.2g} | {verdict(d, ci)} |")
                d, ci, _ = paired(p2, p1, metric)
                lines.append(f"| P{2*N1} beats P{N1} (more predictor steps) | {name} | {d:+.3g} ± {ci:.2g} | {verdict(d, ci)} |")
                for snr, c in [(0.16, c16)] + ([(s_c, ct)] if s_c != 0.16 else []):
                    d, ci, _ = paired(pick(fs, pred, pf, "langevin", N1, s_pc), c, metric)
                    lines.append(f"| PC{N1} (tuned) beats C{2*N1} (snr {snr:g}): corrector-only is worse | {name} | {d:+.3g} ± {ci:.2g} | {verdict(d, ci)} |")
                if pred == "reverse_diffusion" and not pf:
                    continue
                d, ci, _ = paired(rd1, p1, metric)
                lines.append(f"| reverse diffusion P{N1} beats {name} P{N1} | {name} | {d:+.3g} ± {ci:.2g} | {verdict(d, ci)} |")
                d, ci, _ = paired(pick(fs, "reverse_diffusion", False, "langevin", N1, s_pc), pick(fs, pred, pf, "langevin", N1, s_pc), metric)
                lines.append(f"| reverse diffusion PC{N1} beats {name} PC{N1} (tuned) | {name} | {d:+.3g} ± {ci:.2g} | {verdict(d, ci)} |")
            if s_pc != 0.16:
                d, ci, _ = paired(pick(fs, "reverse_diffusion", False, "langevin", N1, s_pc), pick(fs, "reverse_diffusion", False, "langevin", N1, 0.16), metric)
                lines.append(f"| tuned SNR {s_pc:g} beats 0.16 (PC{N1}) | reverse diffusion | {d:+.3g} ± {ci:.2g} | {verdict(d, ci)} |")
            lines.append("")
        nfe = fs[fs.status == "ok"].groupby(["predictor", "corrector", "steps", "corrector_steps"], dropna=False).nfe.mean()
        lines += ["NFE counted per sample: " + ", ".join(f"{p}+{c} N={s}: {v:g}" for (p, c, s, _), v in nfe.items()), ""]
(out / "table1.md").write_text("\n".join(lines) + "\n")
print(f"wrote {out / 'table1.md'}", file=sys.stderr)
EOF
