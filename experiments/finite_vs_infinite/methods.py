r"""Finite versus infinite recurrent networks on sequence classification (Lee et al., 2020).

The pieces of the study, free of any experiment framework (the data, a
:class:`~rntk_empirical.tasks.ClassificationSplit` of a bundled UCR/UEA data set, comes from
:func:`rntk_empirical.tasks.load_classification_split`):

* Kernel predictors from a kernel block ``K`` of shape ``(N_tr + N_va + N_te, N_tr)``
  (rows: train, validation, test; columns: train):
  :func:`select_ridge` (:func:`rntk_empirical.kernel_machines.kernel_regression` with the
  diagonal regularizer ``ridge * tr(K_tt) / N`` chosen on validation, in float64 or float32;
  ridge 0 is the t = infinity limit of gradient descent) and :func:`kernel_gd_path`
  (closed-form gradient descent with f_0 = 0 at a list of steps, reusing
  :func:`rntk_empirical.kernel_machines.gradient_descent_mse`).
* :func:`train_classifier`: full-batch GD (or Adam) on L = 1/(2N) sum_i ||f(x_i) - y_i||^2
  for a k-output :class:`~rntk_empirical.network.ElmanRNN`, optionally *centered*
  (the model is f(x; theta) - f(x; theta_0)), early-stopped on validation accuracy, with
  atomic checkpoints that a killed run resumes from, and divergence recorded (not raised):
  the library trainer :func:`rntk_empirical.training.fit` with the
  :class:`ClassifierTraining` callback.
* :func:`ntk_lambda_max`: the largest eigenvalue of the network's empirical NTK on a batch
  (power iteration on J^T J with ``jvp``/``vjp``), which sets the edge of stability
  eta < 2 N / lambda_max of full-batch GD in any parameterization.
* :func:`distance_power_laws`: exponents p of RMS distance to the kernel predictor ~ n^p for
  single networks and for the ensemble mean over seeds, bootstrapped over seeds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.func import jvp, vjp

from rntk_empirical.kernel_machines import gradient_descent_mse, kernel_regression
from rntk_empirical.network import ElmanRNN
from rntk_empirical.scaling import PowerLawFit, bootstrap_power_law
from rntk_empirical.tasks import ClassificationSplit
from rntk_empirical.training import Callback, TrainSettings, TrainState, fit

# Diagonal regularizers tried on validation, relative to the mean diagonal tr(K)/N.
DEFAULT_RIDGES = (0.0, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


# --------------------------------------------------------------------------- metrics
def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``pred`` ``(N, C)`` whose argmax is the label."""
    return float((pred.argmax(-1).cpu() == labels.cpu()).double().mean())


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1/(2N) sum_i ||pred_i - target_i||^2 (the training loss)."""
    return float(0.5 * ((pred - target) ** 2).sum() / pred.shape[0])


def rms(a: torch.Tensor) -> float:
    return float(a.double().pow(2).mean().sqrt())


def _better(acc: float, loss: float, best: tuple[float, float] | None) -> bool:
    """Validation choice: higher accuracy, ties broken by lower MSE."""
    return best is None or acc > best[0] or (acc == best[0] and loss < best[1])


# --------------------------------------------------------------------------- kernels
@dataclass
class KernelChoice:
    """A kernel predictor chosen on validation: ``val`` ``(N_va, C)``, ``test`` ``(N_te, C)``
    predictions, the choice (``ridge`` or ``step``), and the scores of every candidate."""

    val: torch.Tensor
    test: torch.Tensor
    choice: float
    candidates: list[float]
    val_accuracy: list[float]
    val_loss: list[float]

    def summary(self, labels_test: torch.Tensor, y_test: torch.Tensor) -> dict:
        return {
            "choice": self.choice,
            "test_accuracy": accuracy(self.test, labels_test),
            "test_mse": mse_loss(self.test, y_test),
            "candidates": self.candidates,
            "val_accuracy": self.val_accuracy,
            "val_loss": self.val_loss,
        }


def select_ridge(
    k: torch.Tensor,
    sizes: tuple[int, int, int],
    y_train: torch.Tensor,
    labels_val: torch.Tensor,
    y_val: torch.Tensor,
    ridges: Sequence[float] = DEFAULT_RIDGES,
    dtype: torch.dtype = torch.float64,
) -> KernelChoice:
    """Kernel ridge regression with the relative ridge chosen on validation.

    Args:
        k: ``(N_tr + N_va + N_te, N_tr)`` kernel, rows train/val/test, columns train.
        sizes: ``(N_tr, N_va, N_te)``.
        y_train: ``(N_tr, C)``; labels_val ``(N_va,)``; y_val ``(N_va, C)``.
        ridges: candidates, relative to the mean diagonal of K_train.
        dtype: float64 or float32, the precision of the solve
            (:func:`~rntk_empirical.kernel_machines.kernel_regression`); predictions float64.
    """
    n_tr, n_va, _ = sizes
    mean_diag = float(torch.diagonal(k[:n_tr]).mean())
    preds, accs, losses, best, best_i = [], [], [], None, 0
    for i, r in enumerate(ridges):
        p = kernel_regression(k[:n_tr], y_train, k[n_tr:], float(r) * mean_diag, dtype).double()
        acc, loss = accuracy(p[:n_va], labels_val), mse_loss(p[:n_va], y_val)
        if not math.isfinite(loss):
            acc = -1.0
        preds.append(p)
        accs.append(acc)
        losses.append(loss)
        if _better(acc, loss, best):
            best, best_i = (acc, loss), i
    p = preds[best_i]
    return KernelChoice(p[:n_va], p[n_va:], float(ridges[best_i]), list(ridges), accs, losses)


def kernel_gd_path(
    k: torch.Tensor,
    sizes: tuple[int, int, int],
    y_train: torch.Tensor,
    lr: float,
    steps: Sequence[int],
) -> torch.Tensor:
    """Closed-form GD predictions with f_0 = 0 on validation and test rows at ``steps``:
    ``(S, N_va + N_te, C)`` (:func:`~rntk_empirical.kernel_machines.gradient_descent_mse`)."""
    n_tr = sizes[0]
    p = gradient_descent_mse(
        k[:n_tr].double(), y_train.double(), lr, list(steps), k_test_train=k[n_tr:].double()
    )
    return p.test


def select_step(
    path: torch.Tensor,
    steps: Sequence[int],
    n_val: int,
    labels_val: torch.Tensor,
    y_val: torch.Tensor,
) -> KernelChoice:
    """The step of a GD path (``(S, N_va + N_te, C)``) chosen on validation (early stopping)."""
    accs, losses, best, best_i = [], [], None, 0
    for i in range(len(steps)):
        acc, loss = accuracy(path[i, :n_val], labels_val), mse_loss(path[i, :n_val], y_val)
        accs.append(acc)
        losses.append(loss)
        if _better(acc, loss, best):
            best, best_i = (acc, loss), i
    return KernelChoice(
        path[best_i, :n_val],
        path[best_i, n_val:],
        float(steps[best_i]),
        [float(s) for s in steps],
        accs,
        losses,
    )


# --------------------------------------------------------------------------- networks
def network_function(model: ElmanRNN, seqs: list[torch.Tensor]) -> Callable[[dict], torch.Tensor]:
    """``params -> (N, k)`` outputs of ``model`` on ``seqs`` (a pure function for torch.func)."""
    args = model.forward_args(model.prepare(seqs))

    def f(params: dict) -> torch.Tensor:
        return model.apply_padded(params, *args)

    return f


def ntk_lambda_max(
    model: ElmanRNN, seqs: list[torch.Tensor], iters: int = 30, seed: int = 0
) -> float:
    """lambda_max of the empirical NTK of all k outputs on ``seqs`` (an ``(N k, N k)``
    matrix J J^T), by power iteration on J^T J in parameter space (``jvp`` then ``vjp``).

    Full-batch GD on 1/(2N) sum ||f - y||^2 is stable (in the kernel regime) for
    eta < 2 N / lambda_max.
    """
    f = network_function(model, seqs)
    params = model.param_dict()
    gen = torch.Generator().manual_seed(seed)
    v = {
        n: torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for n, p in params.items()
    }
    _, pullback = vjp(f, params)
    lam = 0.0
    for _ in range(iters):
        norm = math.sqrt(sum(float((t**2).sum()) for t in v.values()))
        v = {n: t / norm for n, t in v.items()}
        jv = jvp(f, (params,), (v,))[1]
        (v,) = pullback(jv)
        lam_new = math.sqrt(sum(float((t**2).sum()) for t in v.values()))
        if abs(lam_new - lam) <= 1e-4 * lam_new:
            lam = lam_new
            break
        lam = lam_new
    return lam


@dataclass
class NetworkRun:
    """A trained network's record: the history at the evaluation steps and its predictions.

    ``val_best``/``test_best``: predictions ``(N, C)`` at the step with the best validation
    accuracy (ties: lower validation MSE); ``test_final``: at the last step (used for the
    distance to the kernel at the same training time). Diverged runs keep what they had.
    """

    lr: float
    centered: bool
    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_step: int = 0
    val_best: torch.Tensor | None = None
    test_best: torch.Tensor | None = None
    test_final: torch.Tensor | None = None
    diverged: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0

    def state(self) -> dict:
        return asdict(self)


class ClassifierTraining(Callback):
    """The study's callback for :func:`~rntk_empirical.training.fit`: the loss
    L = 1/(2N) sum_i ||g(x_i) - y_i||^2 with g = f - offset (:meth:`loss`; the offsets are
    f(.; theta_0) when ``centered``, else zero), and at every record step the validation loss
    and accuracy with the best-validation and last-step predictions (:class:`NetworkRun`).
    A step whose loss diverged is not recorded."""

    state_keys = ("offsets", "run", "best")

    def __init__(
        self, model: ElmanRNN, data: ClassificationSplit, settings: TrainSettings, centered: bool
    ) -> None:
        dtype, device = model.dtype, model.device
        self.model, self.data, self.settings, self.centered = model, data, settings, centered
        self.y_tr = data.targets(data.labels_train).to(device, dtype)
        self.y_va = data.targets(data.labels_val).to(device, dtype)
        self.n_tr = self.y_tr.shape[0]
        self.f_tr = network_function(model, data.x_train)
        self.f_va = network_function(model, data.x_val)
        self.f_te = network_function(model, data.x_test)
        self.run = NetworkRun(lr=settings.lr, centered=centered)
        self.best: tuple[float, float] | None = None

    def loss(self, params: dict, batch: torch.Tensor) -> torch.Tensor:
        """1/(2N) sum_i ||f(x_i; params) - offset_i - y_i||^2 (full batch: ``batch`` unused)."""
        out = self.f_tr(params) - self.offsets["train"]
        return 0.5 * ((out - self.y_tr) ** 2).sum() / self.n_tr

    def on_start(self, state: TrainState, checkpoint: dict | None) -> None:
        if checkpoint is not None:
            self.offsets = checkpoint["offsets"]
            self.run = NetworkRun(**checkpoint["run"])
            self.best = checkpoint["best"]
            return
        dtype, device, data = self.model.dtype, self.model.device, self.data
        with torch.no_grad():
            if self.centered:
                p0 = self.model.param_dict()
                self.offsets = {"train": self.f_tr(p0), "val": self.f_va(p0), "test": self.f_te(p0)}
            else:
                self.offsets = {
                    "train": torch.zeros_like(self.y_tr),
                    "val": torch.zeros_like(self.y_va),
                    "test": torch.zeros(
                        len(data.x_test), data.n_classes, dtype=dtype, device=device
                    ),
                }

    def on_record(self, state: TrainState) -> None:
        if state.diverged:
            return
        run, step, data = self.run, state.step, self.data
        last = step == self.settings.steps
        with torch.no_grad():
            p = self.model.param_dict()
            va = self.f_va(p) - self.offsets["val"]
        acc, vl = accuracy(va, data.labels_val), mse_loss(va, self.y_va)
        run.step.append(step)
        run.train_loss.append(state.loss_value)
        run.val_loss.append(vl)
        run.val_accuracy.append(acc)
        is_best = _better(acc, vl, self.best)
        if is_best or last:
            with torch.no_grad():
                te = (self.f_te(p) - self.offsets["test"]).detach().cpu().double()
            if is_best:
                self.best = (acc, vl)
                run.best_step = step
                run.val_best, run.test_best = va.detach().cpu().double(), te
            if last:
                run.test_final = te

    def on_end(self, state: TrainState) -> None:
        self.run.diverged, self.run.diverged_at = state.diverged, state.diverged_at
        self.run.seconds = state.seconds

    def state_dict(self) -> dict:
        return {"offsets": self.offsets, "run": self.run.state(), "best": self.best}


def train_classifier(
    model: ElmanRNN,
    data: ClassificationSplit,
    settings: TrainSettings,
    centered: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
    config_hash: str | None = None,
    strict_checkpoint: bool = False,
) -> NetworkRun:
    """Train ``model`` in place on ``data`` and return its :class:`NetworkRun`:
    :func:`~rntk_empirical.training.fit` with a :class:`ClassifierTraining` callback.

    Full-batch ``gd`` or ``adam`` (``settings.optimizer``; ``sgd`` is refused: the study
    is full-batch) with learning rate ``settings.lr`` on L = 1/(2N) sum_i ||g(x_i) - y_i||^2,
    g = f (plain) or g = f - f(.; theta_0) (``centered``). Every ``settings.record_every``
    steps (and at the last) the train loss, validation loss and accuracy are recorded; the
    best-validation predictions are kept. A loss that is NaN/Inf or exceeds
    ``settings.diverge_factor`` times the initial loss ends the run as diverged. Every
    ``settings.checkpoint_every`` steps the state is saved atomically to
    ``checkpoint_path``; an existing checkpoint is resumed when it is readable, complete and
    was written by the same ``config_hash`` (:func:`~rntk_empirical.training.load_checkpoint`,
    no pickle); otherwise the run starts afresh with a one-line ``CheckpointWarning``
    (``strict_checkpoint``: raises ``CheckpointError``).
    """
    if settings.optimizer not in ("gd", "adam"):
        raise ValueError(f"optimizer={settings.optimizer!r}; the study trains with gd or adam")
    cb = ClassifierTraining(model, data, settings, centered)
    fit(
        model,
        cb.loss,
        cb.n_tr,
        settings,
        [cb],
        checkpoint_path=checkpoint_path,
        config_hash=config_hash,
        strict_checkpoint=strict_checkpoint,
        progress=progress,
    )
    return cb.run


# --------------------------------------------------------------------------- scaling
def ensemble_distance(residuals: np.ndarray) -> float:
    """RMS of the seed-mean residual: ``residuals`` ``(S, ...)`` -> rms(mean_s r_s)."""
    return float(np.sqrt(np.mean(np.mean(residuals, axis=0) ** 2)))


def single_distance(residuals: np.ndarray) -> float:
    """Mean over seeds of each network's RMS residual: ``(S, ...)`` -> mean_s rms(r_s)."""
    axes = tuple(range(1, residuals.ndim))
    return float(np.mean(np.sqrt(np.mean(residuals**2, axis=axes))))


def distance_power_laws(
    residuals: dict[int, np.ndarray], n_boot: int = 2000, seed: int = 0
) -> dict[str, PowerLawFit]:
    """Fits of RMS distance ~ C n^p over widths, for single networks and for the ensemble.

    Args:
        residuals: width -> ``(S, N, C)`` network-minus-kernel test predictions per seed.
    Returns:
        ``{"single": fit, "ensemble": fit}``; the bootstrap resamples seeds within a width.
    """
    return {
        "single": bootstrap_power_law(residuals, single_distance, n_boot=n_boot, seed=seed),
        "ensemble": bootstrap_power_law(residuals, ensemble_distance, n_boot=n_boot, seed=seed),
    }
