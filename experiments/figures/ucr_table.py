r"""``ucr_table``: SVMs with the RNTK / NNGP on UCR/UEA data sets vs an RBF SVM and a trained RNN.

The RNTK paper's kind of real-data comparison, on the data sets bundled with ``aeon``
(equal-length univariate, multivariate, and the variable-length JapaneseVowels and
PickupGestureWiimoteZ). Per data set:

* inputs: per-channel z-normalization with the training set's mean and sd
  (:func:`rntk_empirical.tasks.aeon_dataset`), optional random subsampling of the training /
  test sets, and piecewise aggregation in time: with stride s = ceil(T_max / max_steps), every
  sequence is replaced by the means of consecutive windows of s steps (lengths stay in
  proportion; no padding);
* RNTK and NNGP (analytic, one pass gives both): ``SVC(kernel="precomputed")`` with
  (s_w, readout, C) chosen by stratified k-fold cross-validation accuracy on the training set
  over s_w in ``sigma_w_grid``, readout in ``readouts`` and C in ``C_grid``;
* RBF SVM on the flattened sequences (variable lengths linearly resampled to the longest
  length), gamma and C by the same cross-validation;
* a finite ElmanRNN trained with Adam on the cross-entropy for a fixed budget of full-batch
  steps (no tuning).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC
from tqdm.auto import tqdm

from experiments.figures.common import (
    FigureResult,
    RunOptions,
    Table,
    fmt_list,
    register_figure,
    resolve_params,
    select,
)
from experiments.figures.different_lengths import resample
from rntk_empirical import Architecture, ElmanRNN
from rntk_empirical.analytic import analytic_kernels
from rntk_empirical.sequences import as_sequences
from rntk_empirical.tasks import aeon_dataset

METHODS = {"rntk": "RNTK SVM", "nngp": "NNGP SVM", "rbf": "RBF SVM", "rnn": "trained RNN"}


@dataclass(frozen=True)
class UCRTableParams:
    """Setup of the ``ucr_table`` figure (full-size defaults, ~10 min on 2 CPU cores).

    Attributes:
        datasets: aeon names.
        max_train, max_test: random subsample caps of the splits (None: all).
        max_steps: time aggregation target (stride ceil(T_max / max_steps)).
        arch: RNTK/NNGP Architecture fields besides sigma_w and readout.
        sigma_w_grid, readouts, C_grid, cv_folds: the kernel SVMs' model selection.
        gamma_factors: RBF gamma = factor / (d var(u)).
        rnn_arch, rnn_width, rnn_steps, rnn_lr: the trained RNN (Adam, full batch, float32).
    """

    datasets: tuple[str, ...] = (
        "ItalyPowerDemand",
        "GunPoint",
        "ArrowHead",
        "OSULeaf",
        "BasicMotions",
        "JapaneseVowels",
        "PickupGestureWiimoteZ",
    )
    max_train: int | None = 120
    max_test: int | None = 200
    max_steps: int = 32
    arch: dict = field(default_factory=lambda: {"sigma_b": 0.1, "sigma_u": 1.0})
    sigma_w_grid: tuple[float, ...] = (1.0, math.sqrt(2.0))
    readouts: tuple[str, ...] = ("last", "avg")
    C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    cv_folds: int = 4
    gamma_factors: tuple[float, ...] = (0.1, 1.0, 10.0)
    rnn_arch: dict = field(
        default_factory=lambda: {"nonlinearity": "relu", "sigma_w": 1.0, "readout": "avg"}
    )
    rnn_width: int = 256
    rnn_steps: int = 150
    rnn_lr: float = 3e-3


QUICK = {
    "datasets": ("ItalyPowerDemand", "GunPoint"),
    "max_train": 30,
    "max_test": 40,
    "max_steps": 12,
    "sigma_w_grid": (math.sqrt(2.0),),
    "readouts": ("last",),
    "gamma_factors": (1.0,),
    "cv_folds": 3,
    "rnn_width": 64,
    "rnn_steps": 40,
}


def aggregate(xs: list[torch.Tensor], stride: int) -> list[torch.Tensor]:
    """Means of consecutive windows of ``stride`` steps (the last window may be shorter)."""
    if stride <= 1:
        return xs
    out = []
    for x in xs:
        T = x.shape[0]
        idx = torch.arange(T) // stride
        n = int(idx[-1]) + 1
        s = torch.zeros(n, x.shape[1], dtype=x.dtype).index_add_(0, idx, x)
        out.append(s / torch.bincount(idx, minlength=n).to(x.dtype)[:, None])
    return out


def _labels(y: torch.Tensor) -> np.ndarray:
    """aeon_dataset targets (+-1, or one-hot - 1/C) -> integer class labels."""
    return (y > 0).long().numpy() if y.dim() == 1 else y.argmax(1).numpy()


def _cv(y: np.ndarray, folds: int, seed: int) -> StratifiedKFold:
    k = max(2, min(folds, int(np.bincount(y).min()) if len(y) else 2))
    return StratifiedKFold(k, shuffle=True, random_state=seed)


def kernel_svm(kernels: dict, ytr: np.ndarray, yte: np.ndarray, n_tr: int, C_grid, cv):
    """Model selection over ``kernels`` {config: (N, N) train+test kernel} and C by CV accuracy.

    Returns (test accuracy, chosen config, chosen C, CV accuracy)."""
    best = None
    for key, K in kernels.items():
        s = GridSearchCV(SVC(kernel="precomputed"), {"C": list(C_grid)}, cv=cv)
        s.fit(K[:n_tr, :n_tr], ytr)
        if best is None or s.best_score_ > best[0] + 1e-12:
            best = (s.best_score_, key, s)
    score, key, s = best
    acc = float(s.score(kernels[key][n_tr:, :n_tr], yte))
    return acc, key, s.best_params_["C"], float(score)


def train_rnn(
    p: UCRTableParams, xtr, ytr, xte, yte, n_classes: int, seed: int, device: str
) -> float:
    """Test accuracy of an ElmanRNN trained with Adam (full batch, cross-entropy)."""
    m = xtr[0].shape[1]
    arch = Architecture(**p.rnn_arch)
    model = ElmanRNN(
        arch, m, p.rnn_width, seed=seed, out_dim=n_classes, dtype=torch.float32, device=device
    )
    str_ = as_sequences(xtr, dtype=torch.float32, device=model.device)
    ste = as_sequences(xte, dtype=torch.float32, device=model.device)
    yt = torch.as_tensor(ytr, device=model.device)
    opt = torch.optim.Adam(model.parameters(), lr=p.rnn_lr)
    for _ in range(p.rnn_steps):
        opt.zero_grad()
        out = model(str_)
        out = out if out.dim() == 2 else out[:, None]
        loss = torch.nn.functional.cross_entropy(out, yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(ste).argmax(1).cpu().numpy()
    return float((pred == yte).mean())


def draw(tables: dict[str, Table], meta: dict) -> plt.Figure:
    rows = tables["main"]
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.25 * len(names) + 1.5), 3.6))
    width = 0.8 / len(METHODS)
    x = np.arange(len(names))
    for j, (m, label) in enumerate(METHODS.items()):
        acc = [select(rows, dataset=n, method=m)[0]["accuracy"] for n in names]
        ax.bar(x + (j - (len(METHODS) - 1) / 2) * width, acc, width, label=label)
    for i, n in enumerate(names):
        ch = select(rows, dataset=n, method="rntk")[0]["chance"]
        ax.hlines(
            ch,
            i - 0.42,
            i + 0.42,
            colors="k",
            linestyles=":",
            lw=1,
            label="chance (majority class)" if i == 0 else None,
        )
    ax.set_xticks(
        x,
        [
            n.replace("PickupGestureWiimoteZ", "PickupGesture\nWiimoteZ").replace(
                "ItalyPowerDemand", "ItalyPower\nDemand"
            )
            for n in names
        ],
        fontsize=8,
    )
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("UCR/UEA classification: kernel SVMs vs a trained RNN")
    ax.legend(frameon=False, fontsize=7.5, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return fig


@register_figure("ucr_table", draw=draw, order=40)
def compute(opts: RunOptions) -> FigureResult:
    p = resolve_params(UCRTableParams, opts, QUICK)
    rows: Table = []
    for name in tqdm(p.datasets, desc="ucr_table: data sets", disable=not opts.progress):
        t0 = time.perf_counter()
        task = aeon_dataset(name, n_train=p.max_train, n_test=p.max_test, seed=opts.seed)
        ytr, yte = _labels(task.y_train), _labels(task.y_test)
        n_classes = int(max(ytr.max(), yte.max()) + 1)
        t_max = task.max_len
        stride = max(1, math.ceil(t_max / p.max_steps))
        xtr, xte = aggregate(task.x_train, stride), aggregate(task.x_test, stride)
        xs, n_tr = xtr + xte, len(xtr)
        lens = [int(x.shape[0]) for x in xs]
        cv = _cv(ytr, p.cv_folds, opts.seed)

        ntk, nngp = {}, {}
        for sw in p.sigma_w_grid:
            for r in p.readouts:
                arch = Architecture(**{**p.arch, "sigma_w": sw, "readout": r})
                th, k = analytic_kernels(arch, xs, device=opts.device)
                ntk[(sw, r)], nngp[(sw, r)] = th.cpu().numpy(), k.cpu().numpy()
        res = {}
        for m, kernels in (("rntk", ntk), ("nngp", nngp)):
            acc, (sw, r), C, cv_acc = kernel_svm(kernels, ytr, yte, n_tr, p.C_grid, cv)
            res[m] = (acc, f"s_w={sw:.4g}, {r}, C={C:g} (CV {cv_acc:.3f})")

        L = max(lens)
        u = resample(xs, L) if min(lens) != L else torch.stack(xs).reshape(len(xs), -1).numpy()
        scale = 1.0 / (u.shape[1] * u[:n_tr].var())
        s = GridSearchCV(
            SVC(kernel="rbf"),
            {"C": list(p.C_grid), "gamma": [g * scale for g in p.gamma_factors]},
            cv=cv,
        ).fit(u[:n_tr], ytr)
        res["rbf"] = (
            float(s.score(u[n_tr:], yte)),
            f"gamma={s.best_params_['gamma'] / scale:g}/(d var), C={s.best_params_['C']:g}",
        )
        res["rnn"] = (
            train_rnn(p, xtr, ytr, xte, yte, n_classes, opts.seed, opts.device),
            f"{p.rnn_steps} Adam steps",
        )
        chance = float(np.bincount(yte, minlength=n_classes).max() / len(yte))
        for m, (acc, chosen) in res.items():
            rows.append(
                {
                    "dataset": name,
                    "method": m,
                    "accuracy": acc,
                    "chosen": chosen,
                    "n_train": n_tr,
                    "n_test": len(xte),
                    "n_classes": n_classes,
                    "channels": int(xs[0].shape[1]),
                    "original_max_len": t_max,
                    "stride": stride,
                    "min_len": min(lens),
                    "max_len": max(lens),
                    "chance": chance,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )

    headline: dict = {
        m: {n: select(rows, dataset=n, method=m)[0]["accuracy"] for n in p.datasets}
        for m in METHODS
    }
    headline["mean_accuracy"] = {m: float(np.mean(list(headline[m].values()))) for m in METHODS}
    headline["chance"] = {
        n: select(rows, dataset=n, method="rntk")[0]["chance"] for n in p.datasets
    }

    lines = [
        "| data set | train/test | classes | m | steps (stride) | "
        + " | ".join(METHODS.values())
        + " | RNTK choice |",
        "|---|---|---|---|---|" + "---|" * (len(METHODS) + 1),
    ]
    for n in p.datasets:
        rr = {r["method"]: r for r in select(rows, dataset=n)}
        r0 = rr["rntk"]
        steps = (
            f"{r0['min_len']}-{r0['max_len']}"
            if r0["min_len"] != r0["max_len"]
            else f"{r0['max_len']}"
        )
        lines.append(
            f"| {n} | {r0['n_train']}/{r0['n_test']} | {r0['n_classes']} | "
            f"{r0['channels']} | {steps} ({r0['stride']}) | "
            + " | ".join(f"{rr[m]['accuracy']:.3f}" for m in METHODS)
            + f" | {r0['chosen']} |"
        )
    cap = lambda v: "all" if v is None else f"at most {v}"  # noqa: E731
    rnn_arch = Architecture(**p.rnn_arch)
    setup = (
        f"- Data sets (aeon): {', '.join(p.datasets)}. Training sets subsampled to "
        f"{cap(p.max_train)} and test sets to {cap(p.max_test)} sequences (random, seed "
        f"{opts.seed}, not stratified) to keep the figure within minutes on a CPU.\n"
        "- Normalization (our choice): each channel z-normalized with the training set's mean "
        "and sd. Time: sequences longer than "
        f"{p.max_steps} steps are aggregated by window means with stride "
        f"ceil(T_max / {p.max_steps}) (per data set; stated in the table).\n"
        f"- RNTK / NNGP: analytic, `{Architecture(**p.arch)}` with s_w in "
        f"{fmt_list(p.sigma_w_grid, '{:.4g}')} and readout in {', '.join(p.readouts)}; SVM C "
        f"in {fmt_list(p.C_grid)}; (s_w, readout, C) chosen by stratified {p.cv_folds}-fold "
        "CV accuracy on the training set (the RNTK paper selects hyperparameters on "
        "validation splits of the training set; its exact grid is larger).\n"
        f"- RBF SVM: flattened sequences (variable lengths linearly resampled to the longest), "
        f"gamma in {fmt_list(p.gamma_factors)} / (d var), C as above, same CV.\n"
        f"- Trained RNN: ElmanRNN width {p.rnn_width}, `{rnn_arch}`, {p.rnn_steps} full-batch "
        f"Adam steps (lr {p.rnn_lr:g}), cross-entropy, float32, no tuning.\n"
        "- Chance = the majority-class frequency of the test set."
    )
    return FigureResult(
        tables={"main": rows},
        headline=headline,
        setup=setup,
        draw=draw,
        title="UCR/UEA classification: RNTK and NNGP SVMs vs RBF SVM and a trained RNN",
        description=(
            "Test accuracies on aeon-bundled UCR/UEA data sets (including two with variable "
            "lengths, which the recurrent kernels take as they are)."
        ),
        params=p,
        markdown="Test accuracy:\n\n" + "\n".join(lines),
    )
