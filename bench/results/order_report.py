"""What ``bench order`` prints and draws: the orders with their intervals, the error and the
counted NFE at each N, and a log–log plot of error against counted NFE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.results.textui import table

INTERVAL_NOTE = (
    "order: least-squares slope of log(error) against log(N) over the fitted N (the upper half "
    "of the points above round-off); interval: the regression's 95% confidence interval, the "
    "local slopes there and their extrapolation to N → ∞, whichever reach furthest. error: RMS "
    "distance to the exact limit (closed-form probability flow to the last evaluation, then the "
    "exact denoiser); * marks fitted points."
)
KIND_NOTE = (
    "weak: |mean − μ| + |variance − a²s⁴/v| of the final sample from the exact marginal at T "
    "(exact moments, no Monte-Carlo error); strong: RMS distance per sample to the same "
    "sampler's fine solution on the same Brownian path."
)


def summary(rows: list[dict[str, Any]]) -> str:
    """One line per sampler × SDE × schedule."""
    lines = []
    for r in rows:
        last = _last_run(r)
        lines.append(
            {
                "sampler": r["sampler"],
                **({"kind": r.get("kind", "flow")} if _kinds(rows) else {}),
                "sde": r["sde"],
                "schedule": r["schedule"],
                "order": _num(r["order"], ".2f"),
                "interval": _interval(r),
                "fitted N": _span(r.get("fit_steps") or []),
                "NFE (nominal) at max N": _nfe(last) if last else "",
                "note": r.get("reason") or r.get("note") or "",
            }
        )
    return table(lines, list(lines[0]) if lines else [])


def details(r: dict[str, Any]) -> str:
    """The points of one row: N, counted and nominal NFE, error, local slope to the next N."""
    kind = f" · {r['kind']}" if r.get("kind", "flow") != "flow" else ""
    head = f"{r['sampler']}{kind} · {r['sde']} · {r['schedule']}: "
    if r["status"] != "ok":
        return head + f"unsupported: {r['reason']}"
    head += f"order {_num(r['order'], '.2f')} {_interval(r)}".rstrip()
    fitted = set(r["fit_steps"])
    points = [p for p in r["points"] if p["error"] is not None]
    lines = []
    for i, p in enumerate(points):
        slope = ""
        if i + 1 < len(points) and p["steps"] in fitted and points[i + 1]["steps"] in fitted:
            slope = f"{r['local_slopes'][sorted(fitted).index(p['steps'])]:.3f}"
        lines.append(
            {
                "N": f"{p['steps']}{'*' if p['steps'] in fitted else ''}",
                "NFE": p["nfe"],
                "nominal": "" if p["nfe_nominal"] is None else p["nfe_nominal"],
                "error": f"{p['error']:.3e}",
                "slope to next": slope,
            }
        )
    skipped = [f"N = {p['steps']}: {p['note']}" for p in r["points"] if p["error"] is None]
    body = table(lines, ["N", "NFE", "nominal", "error", "slope to next"])
    return "\n".join([head, *(["  " + s for s in body.splitlines()]), *skipped])


def report(rows: list[dict[str, Any]]) -> str:
    """The whole text output: the summary, then every row's points."""
    blocks = [summary(rows), *(details(r) for r in rows), INTERVAL_NOTE]
    if _kinds(rows):
        blocks.append(KIND_NOTE)
    return "\n\n".join(blocks)


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Error against counted NFE, log–log, one panel per SDE; fitted points filled."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    sdes = list(dict.fromkeys(r["sde"] for r in rows))
    keys = list(dict.fromkeys((r["sampler"], r["schedule"], r.get("kind")) for r in rows))
    colors = {key: f"C{i % 10}" for i, key in enumerate(keys)}  # one colour per line, every panel
    fig, axes = plt.subplots(1, len(sdes), figsize=(4.6 * len(sdes), 3.8), squeeze=False)
    for ax, sde in zip(axes[0], sdes, strict=True):
        for r in rows:
            if r["sde"] == sde and r["status"] == "ok":
                _line(ax, r, colors[r["sampler"], r["schedule"], r.get("kind")])
        ax.set(xscale="log", yscale="log", title=f"{sde} SDE", xlabel="NFE (counted)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel(
        "error to the exact limit" if _kinds(rows) else "RMS error to the exact limit"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _line(ax: Any, r: dict[str, Any], color: str) -> None:
    points = [p for p in r["points"] if p["error"] is not None and p["error"] > 0]
    order = "" if r["order"] is None else f" ({r['order']:.2f})"
    kind = f" · {r['kind']}" if r.get("kind", "flow") != "flow" else ""
    label = f"{r['sampler']}{kind} · {r['schedule']}{order}"
    ax.plot([p["nfe"] for p in points], [p["error"] for p in points], lw=1, c=color, label=label)
    fitted = [p for p in points if p["steps"] in set(r["fit_steps"])]
    ax.plot(
        [p["nfe"] for p in points], [p["error"] for p in points], "o", ms=3, mfc="none", c=color
    )
    ax.plot([p["nfe"] for p in fitted], [p["error"] for p in fitted], "o", ms=3, c=color)


def _kinds(rows: list[dict[str, Any]]) -> bool:
    """Whether any row measures a weak or strong order (then the summary names each row's)."""
    return any(r.get("kind", "flow") != "flow" for r in rows)


def _last_run(r: dict[str, Any]) -> dict[str, Any] | None:
    runs = [p for p in r["points"] if p["nfe"] is not None]
    return runs[-1] if runs else None


def _nfe(p: dict[str, Any]) -> str:
    nominal = "?" if p["nfe_nominal"] is None else p["nfe_nominal"]
    return f"{p['nfe']} ({nominal}) at N = {p['steps']}"


def _num(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _interval(r: dict[str, Any]) -> str:
    if not r.get("interval"):
        return ""
    low, high = r["interval"]
    return f"[{low:.2f}, {high:.2f}]"


def _span(steps: list[int]) -> str:
    return f"{steps[0]}–{steps[-1]} ({len(steps)})" if steps else ""
