r"""The UCI benchmark protocol of the RNTK papers: kernels, SVM model selection, families.

For one dataset (:class:`rntk_empirical.uci.UCIDataset`, rows scaled by the largest row norm,
each of the d features one time step of a 1-D sequence):

1. every recurrent kernel of the grid (:class:`KernelGrid`) is computed once on all N rows
   (:func:`rntk_empirical.analytic.analytic_kernel_bank`: one recursion per (s_u, s_b,
   direction) serves both depths and every readout, NTK and NNGP);
2. each kernel is scored by an SVM on the precomputed kernel for every C of the grid on the
   ``conxuntos.dat`` train/validation split (validation accuracy);
3. a *family* (:data:`FAMILIES`: a row of the final table, e.g. "every NTK kernel") selects
   the (kernel, C) of highest validation accuracy among its members (the first in grid order
   on ties) and reports the mean test accuracy over the four ``conxuntos_kfold.dat`` pairs.
   Test accuracies are computed only for configurations that lead some family when they are
   seen, so each family's selection is exact while most kernels need no test fits.

Readouts: ``last``, ``per_step``, ``avg`` (true mean pooling: every (t, t') cell) and
``paper_avg``, the kernel the authors' code returns under that name:
``(sum_t K(t, t) + K(T, T)) / T`` = ``per_step + last / T`` for equal lengths (docs/spec.md;
a library readout, :mod:`rntk_empirical.readouts`).
Directions: ``forward``, ``reversed`` (features in reverse order) and ``bidirectional``
(their sum, the kernel of a bidirectional RNN). Baselines (:func:`baseline_candidates`):
RBF and polynomial SVMs, the NTK of a ReLU MLP (closed form) and a random forest.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from experiments.uci.forest import accuracy, forest_score
from rntk_empirical.analytic import analytic_kernel_bank
from rntk_empirical.architecture import Architecture
from rntk_empirical.feedforward import relu_mlp_ntk_layers
from rntk_empirical.uci import UCIDataset

DEFAULT_CS = (0.01, 1.0, 100.0, 1e4, 1e6)
RECURRENT_READOUTS = ("last", "per_step", "avg", "paper_avg")
DIRECTIONS = ("forward", "reversed", "bidirectional")
SVM_MAX_ITER = 100_000


# ---------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class KernelGrid:
    """The recurrent kernels of the benchmark (the papers' grid by default).

    ``max_avg_length``: the ``avg`` readout (cost ~ N^2 T^2) is skipped on datasets with more
    time steps than this (None: never skipped).
    """

    sigma_w: float = math.sqrt(2.0)
    sigma_us: tuple[float, ...] = (0.25, 0.5)
    sigma_bs: tuple[float, ...] = (0.001, 0.1)
    sigma_h: float = 0.0
    depths: tuple[int, ...] = (1, 2)
    readouts: tuple[str, ...] = RECURRENT_READOUTS
    directions: tuple[str, ...] = DIRECTIONS
    nonlinearity: str = "relu"
    max_avg_length: int | None = 64

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("readouts", self.readouts, RECURRENT_READOUTS),
            ("directions", self.directions, DIRECTIONS),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"{name}={values!r}: expected a non-empty subset of {allowed}")
        if not self.sigma_us or not self.sigma_bs or not self.depths:
            raise ValueError("sigma_us, sigma_bs and depths must be non-empty")
        if min(self.depths) < 1:
            raise ValueError(f"depths={self.depths!r}: expected integers >= 1")
        if self.max_avg_length is not None and self.max_avg_length < 1:
            raise ValueError(f"max_avg_length={self.max_avg_length!r}: expected >= 1 or None")

    def readouts_for(self, length: int) -> tuple[str, ...]:
        """The readouts run on a dataset of ``length`` time steps."""
        if self.max_avg_length is not None and length > self.max_avg_length:
            return tuple(r for r in self.readouts if r != "avg")
        return self.readouts

    def units(self) -> list[tuple[float, float]]:
        """The (s_u, s_b) pairs: one unit of work each (two kernel banks)."""
        return [(su, sb) for su in self.sigma_us for sb in self.sigma_bs]

    def size(self, length: int) -> int:
        """Number of kernels (NTK and NNGP counted apart) on a dataset of this length."""
        n = len(self.sigma_us) * len(self.sigma_bs) * len(self.depths) * len(self.directions)
        return 2 * n * len(self.readouts_for(length))


@dataclass(frozen=True)
class KernelSpec:
    """One recurrent kernel of the grid (a JSON-able dict via :meth:`as_dict`)."""

    kernel: str  # ntk | nngp
    readout: str
    direction: str
    depth: int
    sigma_u: float
    sigma_b: float

    def as_dict(self) -> dict:
        return {"method": "recurrent", **asdict(self)}


def recurrent_kernels(
    ds: UCIDataset,
    grid: KernelGrid,
    **options,
) -> Iterator[tuple[KernelSpec, np.ndarray]]:
    """Every kernel of ``grid`` on all rows of ``ds``: ``(spec, K)`` with K ``(N, N)`` float64,
    one unit (:meth:`KernelGrid.units`) after the other; ``options`` as for
    :func:`unit_kernels`."""
    for su, sb in grid.units():
        yield from unit_kernels(ds, grid, su, sb, **options)


def unit_kernels(
    ds: UCIDataset,
    grid: KernelGrid,
    sigma_u: float,
    sigma_b: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    block_size: int | None = None,
    compile: bool = False,
    backend: str = "auto",
    progress=None,
) -> Iterator[tuple[KernelSpec, np.ndarray]]:
    """The kernels of one (s_u, s_b): two banks (forward and reversed inputs) serve every
    depth, readout, direction and kernel, so at most ~ 12 |depths| N x N matrices are alive.
    ``block_size``, ``compile``, ``backend``, ``progress``: see
    :func:`rntk_empirical.analytic.analytic_kernel_bank`."""
    x = ds.sequences()
    readouts = grid.readouts_for(ds.length)
    arch = Architecture(
        depth=max(grid.depths),
        nonlinearity=grid.nonlinearity,
        sigma_w=grid.sigma_w,
        sigma_u=sigma_u,
        sigma_b=sigma_b,
        sigma_h=grid.sigma_h,
    )
    banks = {}
    for direction, xd in (("forward", x), ("reversed", x.flip(1))):
        if direction in grid.directions or "bidirectional" in grid.directions:
            banks[direction] = analytic_kernel_bank(
                arch,
                xd,
                readouts=readouts,
                dtype=dtype,
                device=device,
                block_size=block_size,
                compile=compile,
                backend=backend,
                progress=progress,
            )
    for depth in grid.depths:
        for readout in readouts:
            for k_i, kernel in enumerate(("ntk", "nngp")):
                for direction in grid.directions:
                    bi = direction == "bidirectional"
                    parts = ("forward", "reversed") if bi else (direction,)
                    K = sum(banks[d][(depth, readout)][k_i] for d in parts)
                    spec = KernelSpec(kernel, readout, direction, depth, sigma_u, sigma_b)
                    yield spec, K.to("cpu", torch.float64).numpy()


# ---------------------------------------------------------------------------- baselines
@dataclass(frozen=True)
class BaselineGrid:
    """Hyperparameters of the baselines (selected on the validation split like the kernels).

    The data are the benchmark's scaled rows (norm <= 1), so RBF widths are absolute.
    """

    methods: tuple[str, ...] = ("rbf_svm", "poly_svm", "mlp_ntk", "random_forest")
    rbf_gammas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
    poly_degrees: tuple[int, ...] = (2, 3, 4)
    poly_gammas: tuple[float, ...] = (1.0, 10.0)
    mlp_depths: tuple[int, ...] = (1, 2, 3, 4, 5)
    mlp_sigma_bs: tuple[float, ...] = (0.0, 0.1)
    forest_trees: int = 300
    forest_max_features: tuple[str, ...] = ("sqrt", "0.5")

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in BASELINES]
        if bad:
            raise ValueError(f"unknown baselines {bad}; expected a subset of {BASELINES}")


BASELINES = ("rbf_svm", "poly_svm", "mlp_ntk", "random_forest")


def baseline_kernels(ds: UCIDataset, grid: BaselineGrid) -> Iterator[tuple[dict, np.ndarray]]:
    """``(spec, K)`` for the kernel baselines (RBF, polynomial, ReLU-MLP NTK), K ``(N, N)``."""
    X = ds.X
    gram = X @ X.T
    if "rbf_svm" in grid.methods:
        sq = np.diag(gram)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
        for g in grid.rbf_gammas:
            yield {"method": "rbf_svm", "gamma": g}, np.exp(-g * d2)
    if "poly_svm" in grid.methods:
        for deg in grid.poly_degrees:
            for g in grid.poly_gammas:
                yield {"method": "poly_svm", "degree": deg, "gamma": g}, (g * gram + 1.0) ** deg
    if "mlp_ntk" in grid.methods:
        # one recursion per sigma_b, advanced in lockstep so the kernels come in the grid's
        # order (selection keeps the first of ties): 2 L steps instead of L (L + 1)
        layers: dict[float, tuple[int, Iterator]] = {}
        for depth in grid.mlp_depths:
            for sb in grid.mlp_sigma_bs:
                done, it = layers.get(sb, (0, None))
                if it is None or done >= depth:  # a depth at or below the last: restart
                    done, it = 0, relu_mlp_ntk_layers(X, sigma_b=sb)
                while done < depth:
                    K, done = next(it), done + 1
                layers[sb] = (done, it)
                yield {"method": "mlp_ntk", "depth": depth, "sigma_b": sb}, K.numpy()


# ---------------------------------------------------------------------------- selection
class KernelSVM:
    """SVMs on precomputed kernels with the dataset's splits.

    ``validation(K)``: accuracy for every C (fit on the selection train split, scored on its
    validation split); ``test(K, C)``: accuracy on each of the four train/test pairs.
    Fits that stop at the iteration cap are counted in ``unconverged`` (libsvm's
    ``fit_status_``). The fits of one call run on ``workers`` threads (libsvm releases the
    GIL; default: one per CPU core), each fit single-threaded and deterministic, so the
    results do not depend on ``workers`` (tested); on 2 cores the SVM time of a dataset
    fell 1.45x (pima, statlog-vehicle; docs/uci.md).
    """

    def __init__(
        self, ds: UCIDataset, Cs: tuple[float, ...] = DEFAULT_CS, workers: int | None = None
    ) -> None:
        self.ds, self.Cs = ds, tuple(float(c) for c in Cs)
        self.workers = workers or os.cpu_count() or 1
        self.fits, self.unconverged, self.seconds = 0, 0, 0.0

    def _fit_all(self, jobs: list[tuple[np.ndarray, np.ndarray, float]], K: np.ndarray):
        """Test-split accuracy of an SVM fitted on ``train`` and scored on ``test`` for each
        (train, test, C) of ``jobs``."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.svm import SVC

        y = self.ds.y
        blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the train and cross blocks
        for train, test, _ in jobs:  # of each split, cut once for all its C
            if id(train) not in blocks:
                blocks[id(train)] = (
                    np.ascontiguousarray(K[np.ix_(train, train)]),
                    np.ascontiguousarray(K[np.ix_(test, train)]),
                )

        def fit(job: tuple[np.ndarray, np.ndarray, float]) -> tuple[float, bool]:
            train, test, C = job
            if np.unique(y[train]).size < 2:  # degenerate split: predict its only class
                return accuracy(np.full(test.size, y[train][0]), y[test]), False
            k_train, k_cross = blocks[id(train)]
            clf = SVC(kernel="precomputed", C=C, max_iter=SVM_MAX_ITER, cache_size=500)
            clf.fit(k_train, y[train])
            return accuracy(clf.predict(k_cross), y[test]), clf.fit_status_ != 0

        t0 = time.perf_counter()
        with warnings.catch_warnings():  # counted from fit_status_ instead (thread-safe)
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.workers > 1 and len(jobs) > 1:
                with ThreadPoolExecutor(min(self.workers, len(jobs))) as pool:
                    done = list(pool.map(fit, jobs))
            else:
                done = [fit(job) for job in jobs]
        self.fits += len(jobs)
        self.unconverged += sum(bad for _, bad in done)
        self.seconds += time.perf_counter() - t0
        return [acc for acc, _ in done]

    def validation(self, K: np.ndarray) -> list[float]:
        train, test = self.ds.select
        return self._fit_all([(train, test, C) for C in self.Cs], K)

    def test(self, K: np.ndarray, C: float) -> list[float]:
        return self._fit_all([(tr, te, C) for tr, te in self.ds.folds], K)


def forest_candidates(
    ds: UCIDataset, grid: BaselineGrid, seed: int = 0, workers: int | None = None
) -> Iterator[tuple[dict, float, Callable[[], list[float]]]]:
    """``(spec, validation accuracy, test function)`` for each random-forest setting.

    Independent fits (the validation fit of every setting, the four test folds of one) run
    in ``workers`` processes (joblib's reusable loky pool; default one per CPU core), each
    forest single-threaded with its own ``random_state``, so the accuracies do not depend
    on ``workers`` (tested). Measured on 2 cores, warm pool, one validation fit of both
    settings and four test folds: pima 3.46 -> 1.95 s, statlog-vehicle 4.38 -> 2.13 s,
    waveform 21.1 -> 12.1 s. Threads do not help (sklearn's per-tree Python work holds the
    GIL: pima 3.66 -> 4.25 s), nor does sklearn's ``n_jobs=2`` on small data (it
    dispatches 300 trees: pima 0.51 -> 0.88 s a fit).
    """
    workers = workers or os.cpu_count() or 1

    def run(jobs: list[tuple[str, np.ndarray, np.ndarray]]) -> list[float]:
        args = [(ds.X, ds.y, grid.forest_trees, mf, seed, tr, te) for mf, tr, te in jobs]
        if workers > 1 and len(jobs) > 1:
            from joblib import Parallel, delayed

            par = Parallel(n_jobs=min(workers, len(jobs)), backend="loky")
            return list(par(delayed(forest_score)(*a) for a in args))
        return [forest_score(*a) for a in args]

    settings = grid.forest_max_features
    vals = run([(mf, *ds.select) for mf in settings])
    for mf, val in zip(settings, vals):
        spec = {"method": "random_forest", "max_features": mf, "trees": grid.forest_trees}
        yield spec, val, (lambda mf=mf: run([(mf, tr, te) for tr, te in ds.folds]))


# ---------------------------------------------------------------------------- families
@dataclass(frozen=True)
class Family:
    """A row of the results table: the members a selection ranges over."""

    name: str
    label: str
    group: str  # recurrent | paper-faithful | baseline
    member: Callable[[dict], bool]


def _rec(kernel: str | None = None, readouts=None, directions=None) -> Callable[[dict], bool]:
    true_readouts = readouts or ("last", "per_step", "avg")

    def member(spec: dict) -> bool:
        return (
            spec.get("method") == "recurrent"
            and (kernel is None or spec["kernel"] == kernel)
            and spec["readout"] in true_readouts
            and (directions is None or spec["direction"] in directions)
        )

    return member


def _method(name: str) -> Callable[[dict], bool]:
    return lambda spec: spec.get("method") == name


FAMILIES: tuple[Family, ...] = (
    Family("rntk", "RNTK (every readout and direction)", "recurrent", _rec("ntk")),
    Family("nngp", "recurrent NNGP (every readout and direction)", "recurrent", _rec("nngp")),
    Family("recurrent", "RNTK or NNGP (every readout and direction)", "recurrent", _rec()),
    Family(
        "rntk_last_fwd",
        "RNTK, last step, forward (ICLR'21)",
        "recurrent",
        _rec("ntk", ("last",), ("forward",)),
    ),
    Family("rntk_per_step", "RNTK, per-step readout", "recurrent", _rec("ntk", ("per_step",))),
    Family("rntk_avg", "RNTK, mean pooling", "recurrent", _rec("ntk", ("avg",))),
    Family(
        "rntk_bi",
        "RNTK, bidirectional",
        "recurrent",
        _rec("ntk", None, ("bidirectional",)),
    ),
    Family(
        "paper_nngp",
        "as published: NNGP only, authors' avg",
        "paper-faithful",
        _rec("nngp", ("last", "paper_avg")),
    ),
    Family(
        "paper_rntk",
        "as intended: RNTK, authors' avg",
        "paper-faithful",
        _rec("ntk", ("last", "paper_avg")),
    ),
    Family("rbf_svm", "RBF SVM", "baseline", _method("rbf_svm")),
    Family("poly_svm", "polynomial SVM", "baseline", _method("poly_svm")),
    Family("mlp_ntk", "ReLU MLP NTK (SVM)", "baseline", _method("mlp_ntk")),
    Family("random_forest", "random forest", "baseline", _method("random_forest")),
)


@dataclass
class Leader:
    spec: dict
    C: float | None
    val_acc: float
    test_folds: list[float]


@dataclass
class FamilySelection:
    """Running model selection of every family (validation accuracy, first wins ties).

    :meth:`offer` computes a candidate's test accuracies (once) only if it leads a family.
    """

    families: tuple[Family, ...] = FAMILIES
    leaders: dict[str, Leader] = field(default_factory=dict)
    test_evaluations: int = 0

    def offer(
        self, spec: dict, C: float | None, val_acc: float, test: Callable[[], list[float]]
    ) -> None:
        folds = None
        for fam in self.families:
            if not fam.member(spec):
                continue
            cur = self.leaders.get(fam.name)
            if cur is None or val_acc > cur.val_acc:
                if folds is None:
                    folds = test()
                    self.test_evaluations += 1
                self.leaders[fam.name] = Leader(spec, C, val_acc, folds)

    def results(self) -> dict[str, dict]:
        out = {}
        for fam in self.families:
            lead = self.leaders.get(fam.name)
            if lead is None:
                continue
            choice = dict(lead.spec)
            if lead.C is not None:
                choice["C"] = lead.C
            out[fam.name] = {
                "test_acc": float(np.mean(lead.test_folds)),
                "test_folds": lead.test_folds,
                "val_acc": lead.val_acc,
                "choice": choice,
            }
        return out

    def info(self) -> dict[str, dict]:
        return {f.name: {"group": f.group, "label": f.label} for f in self.families}

    def state(self) -> dict:
        """JSON-able state (for checkpoints); :meth:`restore` is its inverse."""
        return {
            "leaders": {k: asdict(v) for k, v in self.leaders.items()},
            "test_evaluations": self.test_evaluations,
        }

    def restore(self, state: dict) -> None:
        self.leaders = {k: Leader(**v) for k, v in state["leaders"].items()}
        self.test_evaluations = int(state["test_evaluations"])


def offer_kernel(
    sel: FamilySelection, svm: KernelSVM, spec: dict, K: np.ndarray
) -> dict[str, object]:
    """Score kernel ``K`` for every C and offer its best C to the families.

    Returns the kernel's row of the record: spec, validation accuracy per C, best C.
    """
    if not np.isfinite(K).all():
        return {"spec": spec, "val_acc": None, "error": "non-finite kernel"}
    val = svm.validation(K)
    best = int(np.argmax(val))  # first (smallest) C on ties
    C = svm.Cs[best]
    sel.offer(spec, C, val[best], lambda: svm.test(K, C))
    return {"spec": spec, "val_acc": val, "best_C": C}
