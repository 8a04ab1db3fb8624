"""Class-conditional models and classifier-free guidance: the guided score on the exact oracle
against its closed form, labels per sample, pass counting, the grid dimension and cell ids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from bench.cli import cli
from bench.cli.params import GUIDANCE_BATCHINGS
from bench.core.guidance import (
    BATCHINGS,
    NULL_LABEL,
    Guidance,
    GuidedFn,
    resolve_batching,
    sigma_of,
)
from bench.core.labels import LabelPolicy
from bench.core.views import ModelView
from bench.errors import BenchError, Unsupported

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def oracle(registry, name: str = "ring8-cond"):
    entry = registry.get("score-models", name)
    return entry.obj.load(None, device=CPU, dtype=torch.float64)


def closed_form_score(model, sde, x: Tensor, t: float, label: int) -> Tensor:  # noqa: F821
    """∇ log p_t(x | c) by autograd of the perturbed sub-mixture's log density (independent of
    the model's code: logsumexp over the class's components of log w_k N(x; a·μ_k, v_k I))."""
    a, std = sde.marginal_coef(t)
    m = model.mixture
    keep = torch.ones(len(m.weights), dtype=torch.bool)
    if label != NULL_LABEL:
        keep = model.classes_of == label
    out = []
    for xi in x.reshape(len(x), -1):
        xi = xi.clone().requires_grad_()
        v = a * a * m.stds[keep] ** 2 + std**2
        sq = (xi[None] - a * m.means[keep]).square().sum(-1)
        logp = torch.logsumexp(m.weights[keep].log() - 0.5 * m.dim * torch.log(v) - sq / (2 * v), 0)
        out.append(torch.autograd.grad(logp, xi)[0])
    return torch.stack(out).reshape(x.shape)


@pytest.mark.parametrize("name", ["ring8-cond", "gmm64-cond"])
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_guided_score_is_the_closed_form_combination(registry, make_sde, name, sde_name):
    model, sde = oracle(registry, name), make_sde(sde_name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, *model.data_shape, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    for s in (0.0, 1.0, 2.5, 7.0):
        guided = GuidedFn(model.conditional_fn(sde), Guidance(s), sde)
        guided.labels = labels
        view = ModelView(guided, model.native, sde)
        for t in (0.9, 0.3, 0.02):
            cond = torch.stack(
                [
                    closed_form_score(model, sde, x[i : i + 1], t, int(c))[0]
                    for i, c in enumerate(labels)
                ]
            )
            uncond = closed_form_score(model, sde, x, t, NULL_LABEL)
            expected = uncond + s * (cond - uncond)
            torch.testing.assert_close(view.score(x, t), expected, rtol=1e-9, atol=1e-9)
            a, std = sde.marginal_coef(t)  # every view is the guided model too
            torch.testing.assert_close(view.eps(x, t), -std * expected, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(
                view.denoise(x, t), (x + std**2 * expected) / a, rtol=1e-9, atol=1e-9
            )


def test_unconditional_output_is_the_whole_mixture(registry, make_sde):
    model, sde = oracle(registry), make_sde("vp")
    x = torch.randn(5, 2, dtype=torch.float64)
    null = torch.full((5,), NULL_LABEL)
    torch.testing.assert_close(model.conditional_fn(sde)(x, 0.4, null), model.score_fn(sde)(x, 0.4))


class Recorder:
    """A conditional function that records its calls' batch sizes and labels."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, labels):
        self.calls.append((x.shape[0], labels.clone()))
        return x * 0 + (labels[:, None] >= 0).to(x.dtype) * 2.0 + 1.0  # cond 3, uncond 1


def test_one_forward_of_2b_per_guided_evaluation_and_passes_counted(make_sde):
    sde = make_sde("vp")
    fn = Recorder()
    guided = GuidedFn(fn, Guidance(4.0), sde)
    guided.labels = torch.tensor([2, 0, 1])
    out = guided(torch.zeros(3, 1), 0.5)
    assert [b for b, _ in fn.calls] == [6]  # conditional half first, then the null labels
    assert fn.calls[0][1].tolist() == [2, 0, 1, NULL_LABEL, NULL_LABEL, NULL_LABEL]
    torch.testing.assert_close(out, torch.full((3, 1), 1 + 4.0 * (3 - 1)))  # uncond + s(c − u)
    assert guided.passes == 2
    for s, value, labels in ((1.0, 3.0, [2, 0, 1]), (0.0, 1.0, [NULL_LABEL] * 3)):
        fn.calls.clear()
        one = GuidedFn(fn, Guidance(s), sde)
        one.labels = torch.tensor([2, 0, 1])
        torch.testing.assert_close(one(torch.zeros(3, 1), 0.5), torch.full((3, 1), value))
        assert one.passes == 1 and [b for b, _ in fn.calls] == [3]
        assert fn.calls[0][1].tolist() == labels


def test_split_batching_is_two_forwards_of_b_with_the_same_output(make_sde):
    """``joint=False``: the conditional forward, then the unconditional one, each of B; the same
    combination and the same pass count as one forward of 2B."""
    sde = make_sde("vp")
    fn = Recorder()
    split = GuidedFn(fn, Guidance(4.0), sde, joint=False)
    split.labels = torch.tensor([2, 0, 1])
    out = split(torch.zeros(3, 1), 0.5)
    assert [b for b, _ in fn.calls] == [3, 3]
    assert [labels.tolist() for _, labels in fn.calls] == [[2, 0, 1], [NULL_LABEL] * 3]
    torch.testing.assert_close(out, torch.full((3, 1), 1 + 4.0 * (3 - 1)))
    assert split.passes == 2


@pytest.mark.parametrize("name", ["ring8-cond", "gmm64-cond", "digits-cond"])
def test_joint_and_split_batching_give_the_same_guided_output(registry, make_sde, name):
    """One forward of 2B and two of B compute the same function: equal up to float32 rounding
    (the oracles' matrix products block by batch size), bit for bit for the digits UNet here."""
    sde = make_sde("vp")
    model = registry.get("score-models", name).obj.load(None, device=CPU, dtype=torch.float32)
    fn = model.conditional_fn(sde)
    shape = (64, 1, 8, 8) if name == "digits-cond" else (300, 64 if name == "gmm64-cond" else 2)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(shape[0]) % model.classes
    for t in (0.9, 0.2, 0.01):
        outs = []
        for joint in (True, False):
            guided = GuidedFn(fn, Guidance(3.0), sde, joint)
            guided.labels = labels
            outs.append(guided(x, t))
        if name == "digits-cond":
            assert torch.equal(outs[0], outs[1])
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("choice", "device", "exact", "want"), [
    ("auto", "cpu", False, "split"), ("auto", "cuda", False, "joint"),
    ("auto", "cpu", True, "joint"), ("joint", "cpu", False, "joint"),
    ("split", "cuda", True, "split"),
])  # fmt: skip
def test_auto_batching_splits_a_network_on_the_cpu_only(choice, device, exact, want):
    assert resolve_batching(choice, torch.device(device), exact) == want
    assert GUIDANCE_BATCHINGS == BATCHINGS  # the CLI's choices (kept free of torch) are the core's


def test_guidance_batch_is_recorded_and_keeps_the_cell(tmp_path):
    """The oracle keeps one forward of 2B under ``auto`` (its baseline numbers stay); ``split``
    is recorded, the cell id is the same and the metrics agree to float32 rounding."""
    common = [*RING, "--guidance", "2.5", "--metrics", "swd"]
    joint = run(tmp_path, "joint", *common)
    split = run(tmp_path, "split", *common, "--guidance-batch", "split")
    assert set(joint["guidance_batch"]) == {"joint"} and set(split["guidance_batch"]) == {"split"}
    assert list(joint["cell_id"]) == list(split["cell_id"])
    np.testing.assert_allclose(joint["swd"], split["swd"], rtol=1e-4)


def test_guidance_interval_guides_inside_only(make_sde):
    sde = make_sde("vp")
    guidance = Guidance(3.0, (0.5, 2.0))
    guided = GuidedFn(Recorder(), guidance, sde)
    guided.labels = torch.tensor([0])
    for t in (0.05, 0.3, 0.6, 0.95):
        sigma = sigma_of(sde, t)
        before = guided.passes
        out = guided(torch.zeros(1, 1), t)
        inside = 0.5 < sigma <= 2.0
        assert guided.passes - before == (2 if inside else 1)
        assert float(out) == (1 + 3.0 * 2 if inside else 3.0)
    assert any(0.5 < sigma_of(sde, t) <= 2.0 for t in (0.3, 0.6))
    assert any(not 0.5 < sigma_of(sde, t) <= 2.0 for t in (0.05, 0.95))


@pytest.mark.parametrize("policy", ["balanced", "random", "2"])
def test_labels_depend_on_seed_and_index_only(policy):
    p = LabelPolicy.parse(policy)
    whole = p.labels(seed=3, start=0, size=50, classes=4)
    parts = torch.cat([p.labels(3, s, min(7, 50 - s), 4) for s in range(0, 50, 7)])
    assert torch.equal(whole, parts) and whole.dtype == torch.int64
    assert int(whole.min()) >= 0 and int(whole.max()) < 4
    if policy == "balanced":
        assert whole.tolist() == [i % 4 for i in range(50)]
    if policy == "2":
        assert set(whole.tolist()) == {2}


def test_random_labels_are_uniform_and_seeded():
    p = LabelPolicy.parse("random")
    labels = p.labels(seed=0, start=0, size=20_000, classes=5)
    counts = torch.bincount(labels, minlength=5).double()
    chi2 = float(((counts - 4000) ** 2 / 4000).sum())
    assert chi2 < 20.5  # 4 degrees of freedom: P(χ² > 20.5) ≈ 4e-4
    assert not torch.equal(labels[:100], p.labels(1, 0, 100, 5))


@pytest.mark.parametrize("text", ["", "uniform", "-1", "1.5"])
def test_bad_label_policy_is_refused(text):
    with pytest.raises(BenchError, match="--labels"):
        LabelPolicy.parse(text)


def test_exact_conditional_samples_come_from_their_class(registry):
    model = oracle(registry)
    labels = torch.tensor([0, 1, 2, 3] * 500)
    x = model.sample_conditional(labels, torch.Generator().manual_seed(0))
    nearest = model.mixture.nearest(x)
    assert torch.equal(model.classes_of[nearest], labels)
    shares = model.component_shares(labels)
    torch.testing.assert_close(shares, torch.full((8,), 1 / 8, dtype=torch.float64))


def test_no_null_label_makes_other_scales_unsupported(registry):
    from bench.run.conditioning import check_guidance

    model = oracle(registry)
    model.null_label, model.null_label_reason = False, "it was trained without label dropout"

    class Cell:
        guidance, guidance_interval = 2.0, None

    with pytest.raises(Unsupported, match="trained without label dropout"):
        check_guidance(Cell(), model)
    Cell.guidance = 1.0
    check_guidance(Cell(), model)


# -- the grid dimension, end to end ----------------------------------------------------------------
def run(tmp_path, name: str, *args: str) -> pd.DataFrame:
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["run", *args, "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "results.csv", keep_default_na=False)


RING = ["--model", "ring8-cond", "--sdes", "vp", "--samplers", "heun,dpmpp_2m", "--steps", "6"]
RING += ["--seeds", "0", "--samples", "24", "--dtype", "float64"]


def test_guidance_is_a_grid_dimension_with_passes_counted(tmp_path):
    rows = run(tmp_path, "g", *RING, "--guidance", "1,3", "--metrics", "swd,ode_err")
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    assert sorted(rows["guidance"].unique()) == [1.0, 3.0]
    assert set(rows["labels"]) == {"balanced"} and set(rows["guidance_interval"]) == {"none"}
    one, three = rows[rows["guidance"] == 1.0], rows[rows["guidance"] == 3.0]
    assert list(one["passes"]) == list(one["nfe"])
    assert list(three["passes"]) == list(2 * three["nfe"])
    assert (three["swd"].to_numpy() != one["swd"].to_numpy()).all()  # guidance moved the samples


def test_guided_samples_do_not_depend_on_the_batch_size(tmp_path):
    common = [*RING, "--guidance", "2.5", "--labels", "random", "--metrics", "swd,fd,ode_err"]
    whole = run(tmp_path, "whole", *common, "--batch-size", "24", "--save-samples")
    parts = run(tmp_path, "parts", *common, "--batch-size", "5", "--save-samples")
    assert list(whole["sampler"]) == list(parts["sampler"])  # the batch size is in the cell id
    for one, other in zip(whole["cell_id"], parts["cell_id"], strict=True):
        a = np.load(tmp_path / "whole" / "samples" / f"{one}.npz")["samples"]
        b = np.load(tmp_path / "parts" / "samples" / f"{other}.npz")["samples"]
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    for column in ("swd", "fd", "ode_err"):
        np.testing.assert_allclose(whole[column], parts[column], rtol=1e-9)


def test_guidance_interval_is_in_the_row_and_the_id(tmp_path):
    plain = run(tmp_path, "plain", *RING, "--guidance", "3", "--metrics", "none")
    inside = run(
        tmp_path, "inside", *RING, "--guidance", "3", "--guidance-interval", "0.2,1.5",
        "--metrics", "none",
    )  # fmt: skip
    assert set(inside["guidance_interval"]) == {"0.2,1.5"}
    assert not set(plain["cell_id"]) & set(inside["cell_id"])
    assert (inside["passes"] < plain["passes"]).all() and (inside["passes"] > inside["nfe"]).all()


def test_guidance_collapses_for_an_unconditional_model(tmp_path):
    out = tmp_path / "u"
    args = ["run", "--model", "ring8", "--sdes", "vp", "--samplers", "heun", "--steps", "4"]
    args += ["--samples", "8", "--seeds", "0", "--metrics", "none", "--guidance", "1,2"]
    result = CliRunner().invoke(cli, [*args, "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "unconditional" in result.output
    rows = pd.read_csv(out / "results.csv")
    assert len(rows) == 1 and "guidance" not in rows and list(rows["passes"]) == list(rows["nfe"])


def test_unconditional_cell_ids_are_those_of_the_committed_baseline(registry):
    """The committed baseline's cell ids come out of today's grid for the same command."""
    from bench.cli import Session  # noqa: F401 - the CLI's session carries the registry
    from bench.run.components import Components
    from bench.run.grid import expand
    from bench.run.sweep import Sweep

    rows = [
        json.loads(line) for line in (ROOT / "results/baseline/oracle-solvers/rows.jsonl").open()
    ]
    meta = json.loads((ROOT / "results/baseline/oracle-solvers/run.json").read_text())
    kw = {
        k: tuple(v) if isinstance(v, list) else v for k, v in meta["invocation"]["options"].items()
    }

    class FakeSession:
        modules: list = []
        dirs: list = []

    FakeSession.registry = registry
    sweep = Sweep.from_cli(FakeSession(), {**kw, "resume": None, "new_run": False, "dry_run": True})
    ids = {c.id for c in expand(sweep.spec, Components(sweep.env))}
    assert {r["cell_id"] for r in rows} <= ids


@pytest.mark.parametrize(
    "args,message",
    [
        (["--labels", "4"], "has classes 0..3"),
        (["--labels", "most"], "use balanced, random or a class index"),
        (["--guidance-interval", "2,1"], "need 0 <= LO < HI"),
        (["--guidance-interval", "1"], "is not LO,HI"),
        (["--guidance", "-1"], "must be >= 0"),
    ],
)
def test_bad_guidance_options_exit_2(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["run", *RING, *args, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_resume_skips_finished_guided_cells(tmp_path):
    args = [*RING, "--guidance", "1,2", "--metrics", "swd"]
    first = run(tmp_path, "r", *args)
    result = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "4 cells (4 already done)" in result.output
    assert len(pd.read_csv(tmp_path / "r" / "results.csv")) == len(first) == 4


def test_a_mixture_file_with_classes_is_conditional(tmp_path, registry):
    spec = json.loads((ROOT / "plugins/data/ring8.json").read_text())
    good = tmp_path / "c.json"
    good.write_text(json.dumps({**spec, "classes": [0, 1] * 4}))
    model = registry.get("score-models", "gmm").obj.load(str(good), device=CPU, dtype=torch.float64)
    assert model.classes == 2 and model.null_label
    for classes, message in (([0] * 7, "one class per component"), ([0, 2] * 4, "no component")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**spec, "classes": classes}))
        with pytest.raises(BenchError, match=message):
            registry.get("score-models", "gmm").obj.load(str(bad), device=CPU, dtype=torch.float32)


def test_ode_err_converges_at_second_order_for_heun_under_guidance(tmp_path):
    """The reference is the guided probability-flow map: a second-order sampler's error to it
    falls ~4× per doubling of N (so the reference is far more accurate than the sampler)."""
    rows = run(
        tmp_path, "o", "--model", "ring8-cond", "--sdes", "vp", "--samplers", "heun",
        "--steps", "40,80,160", "--guidance", "3", "--samples", "16", "--seeds", "0",
        "--metrics", "ode_err",
        "--dtype", "float64",
    )  # fmt: skip
    err = rows.sort_values("steps")["ode_err"].to_numpy()
    ratios = err[:-1] / err[1:]
    assert ((ratios > 3.2) & (ratios < 5)).all(), err
    assert math.isfinite(err[-1]) and err[-1] < 1e-3


def test_dry_run_counts_passes(tmp_path):
    args = ["run", *RING, "--guidance", "1,4", "--dry-run"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    # heun at N = 6: 11 evaluations, dpmpp_2m: 6; 24 samples each; s = 4 costs two passes
    evaluations = 2 * (11 + 6) * 24
    assert f"{evaluations:,} score evaluations" in result.output
    assert f"{evaluations * 3 // 2:,} network passes" in result.output


def test_profile_times_a_guided_batch_against_two_passes(tmp_path):
    args = ["profile", "--model", "ring8-cond", "--sde", "vp", "--sampler", "heun"]
    args += ["--steps", "4", "--repeats", "2", "--calls", "3", "--guidance", "3"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p" / "results.csv").set_index("variant")
    assert {"guided_2b", "guided_split", "two_passes", "sde_bench"} <= set(frame.index)
    for variant in ("guided_2b", "guided_split"):
        row = frame.loc[variant]
        assert row["ratio_vs_two_passes"] == pytest.approx(
            row["wall_s"] / frame.loc["two_passes", "wall_s"]
        )
    assert frame.loc["sde_bench", "nfe"] == 7 and set(frame["guidance"]) == {3.0}
    assert set(frame["guidance_batch"]) == {"joint"}  # auto, for an exact oracle
    assert "(joint: one forward of 2B)" in result.output


def test_report_draws_the_guidance_tradeoff(tmp_path, monkeypatch):
    """One curve per sampler through the scales, one panel per N, the floors as lines."""
    import bench.results.guidance_plots as guidance_plots
    from bench.results.report import build_report
    from tests.rows import row

    kept = []
    monkeypatch.setattr(guidance_plots, "save", lambda fig, folder, name: kept.append(fig) or [])
    rows = []
    for predictor in ("euler_maruyama", "reverse_diffusion"):
        for steps in (10, 20):
            for s in (1.0, 2.0, 4.0):
                for seed in (0, 1):
                    rows.append(
                        row(
                            predictor=predictor,
                            steps=steps,
                            seed=seed,
                            metrics="class_acc,fid",
                            cell_id=f"{predictor}{steps}{s}{seed}",
                            guidance=s,
                            labels="balanced",
                            class_acc=0.9 + 0.02 * s + 0.001 * seed,
                            class_acc_floor=0.99,
                            class_acc_floor_std=0.005,
                            fid=5 + s**2 + seed,
                            fid_floor=4.0,
                            fid_floor_std=1.0,
                        )
                    )
    report = build_report(rows)
    assert guidance_plots.axes_metrics(report) == ("class_acc", "fid")
    guidance_plots.plot_guidance_tradeoff(report, tmp_path)
    (fig,) = kept
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["N=10", "N=20"]
    lines = [c for c in panels[0].containers]  # error-bar lines, one per sampler
    assert len(lines) == 2
    xs = lines[0].lines[0].get_xdata()
    np.testing.assert_allclose(
        np.asarray(xs, dtype=float), [0.9205, 0.9405, 0.9805]
    )  # means over seeds, s ascending
    texts = [t.get_text() for t in panels[0].texts]
    assert texts.count("s=4") == 2
    assert {ln.get_label() for ln in panels[0].lines} >= {"fid floor (real data)"}
    from bench.results.plots import _pyplot

    _pyplot().close(fig)
