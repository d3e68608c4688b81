r"""The one trainer (:func:`fit` with :class:`Callback` hooks) and the drift tracking built on it.

:func:`fit` owns the loop over steps: the minibatch, the loss (a function of the parameters),
the optimizer step, divergence detection, atomic checkpoints read back through the safe
loader, and the hooks at start, record steps, after each step and at the end. The drift
experiment's configuration is :func:`train_and_track` (a :class:`DriftTracker` callback);
the finite-versus-infinite study's lives in its experiment.

Drift tracking trains a finite RNN next to its linearization.
The loss is the mean squared error L(theta) = 1/(2N) sum_i (f(x_i) - y_i)^2 over the N
training sequences. Full-batch gradient descent with learning rate eta moves the outputs,
to first order, by f <- f - (eta/N) Theta (f - y): the kernel regime. Three predictions of
the trained outputs are tracked against the real network:

* the linearized network f_lin(x; theta) = f(x; theta_0) + J(x; theta_0)(theta - theta_0),
  trained by the same optimizer (forward-mode ``jvp`` for its outputs, the ``vjp`` at theta_0
  for its gradients);
* the closed-form kernel gradient-descent prediction with the network's own Theta_0 (for
  plain GD this equals the linearized network up to round-off: a built-in consistency check);
* the same closed form with the analytic Theta (the infinite-width prediction).

Every ``record_every`` steps a :class:`History` row records train/test losses, the NTK on a
fixed probe set and its drift ||Theta_t - Theta_0||_F / ||Theta_0||_F and kernel distance,
per-parameter relative weight changes, and output distances. Training checkpoints atomically
and resumes; a loss that becomes NaN/Inf or explodes stops the run as ``diverged``.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch.func import jvp, vjp

from rntk_empirical.atomic import atomic_torch_save
from rntk_empirical.empirical import empirical_ntk, per_example_jacobians
from rntk_empirical.metrics import kernel_distance, relative_drift
from rntk_empirical.network import ElmanRNN
from rntk_empirical.safe_io import ReadBackWarning, UnreadableFile, load_torch
from rntk_empirical.sequences import Sequences

OPTIMIZERS = ("gd", "sgd", "adam")
# Keys the trainer writes into every checkpoint; callbacks add theirs (``Callback.state_keys``).
TRAINER_CHECKPOINT_KEYS = ("step", "params", "opt", "gen", "loss0", "seconds")
# A drift checkpoint: the trainer's keys and the DriftTracker's.
CHECKPOINT_KEYS = TRAINER_CHECKPOINT_KEYS + ("lin", "theta0", "history", "ntk0")


class CheckpointError(UnreadableFile):
    """A checkpoint that cannot be resumed (damaged, not a checkpoint, or written by another
    configuration), raised instead of a warning when the caller asks for strictness."""


class CheckpointWarning(ReadBackWarning):
    """A checkpoint was ignored (the seed starts afresh); the message says why, in one line."""


@dataclass
class TrainSettings:
    """How to train. ``lr`` is the absolute learning rate (see :func:`kernel_learning_rate`)."""

    steps: int = 200
    lr: float = 1.0
    optimizer: str = "gd"
    batch_size: int | None = None  # sgd only; None = full batch
    record_every: int = 10
    checkpoint_every: int = 50
    diverge_factor: float = 1e4  # stop when loss > factor * initial loss (or NaN/Inf)
    track_linearized: bool = True
    linearization: str = "auto"  # auto | explicit | jvp (see Linearization)
    seed: int = 0  # minibatch order

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer={self.optimizer!r} is not valid; "
                f"allowed values: {', '.join(OPTIMIZERS)}"
            )
        for name in ("steps", "record_every", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is not valid; expected an integer >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr={self.lr!r} is not valid; expected a finite number > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size!r} is not valid; expected >= 1 or None")


@dataclass
class History:
    """Per-record time series (lists aligned with ``step``), JSON-serializable."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    ntk_drift: list[float] = field(default_factory=list)
    kernel_distance: list[float] = field(default_factory=list)
    weight_change: list[dict[str, float]] = field(default_factory=list)
    weight_change_total: list[float] = field(default_factory=list)
    lin_train_loss: list[float] = field(default_factory=list)
    lin_test_loss: list[float] = field(default_factory=list)
    dist_linearized: list[float] = field(default_factory=list)
    dist_kernel_empirical: list[float] = field(default_factory=list)
    dist_kernel_analytic: list[float] = field(default_factory=list)
    dist_lin_vs_kernel_empirical: list[float] = field(default_factory=list)
    kernel_empirical_train_loss: list[float] = field(default_factory=list)
    kernel_analytic_train_loss: list[float] = field(default_factory=list)
    diverged: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0


def learning_rate(lambda_max: float, n: int, scale: float = 1.0) -> float:
    """The one learning-rate rule: eta = scale * N / lambda_max.

    GD on L = 1/(2N) sum_i ||f(x_i) - y_i||^2 in the kernel regime is stable for
    eta < 2N / lambda_max (lambda_max of the NTK on the N training inputs, all outputs);
    ``scale`` = 1 is half that bound, the same relative step at every width.
    """
    if not (lambda_max > 0 and math.isfinite(lambda_max)):
        raise ValueError(f"the training-set NTK has largest eigenvalue {lambda_max}; cannot set lr")
    return scale * n / lambda_max


def kernel_learning_rate(theta_train: torch.Tensor, scale: float = 1.0) -> float:
    """:func:`learning_rate` with lambda_max of the ``(N, N)`` kernel ``theta_train``."""
    lam = float(torch.linalg.eigvalsh(theta_train.double()).max())
    return learning_rate(lam, theta_train.shape[0], scale)


def mse(f: torch.Tensor, y: torch.Tensor) -> float:
    """1/(2N) sum (f - y)^2 (the training loss)."""
    return float(0.5 * ((f - y) ** 2).mean())


def rms(a: torch.Tensor) -> float:
    return float(a.pow(2).mean().sqrt())


@dataclass
class KernelPredictions:
    """Closed-form GD predictions at the record steps: ``train`` (S, N), ``test`` (S, M)."""

    train: torch.Tensor
    test: torch.Tensor


# Bytes the explicit Jacobians of the linearization may take (train + test).
JACOBIAN_BUDGET_BYTES = 2 * 2**30


class Linearization:
    """The linearized network f_0(x) + J_0(x) delta, delta = theta - theta_0, with its own
    optimizer (the same kind and learning rate as the network's).

    Two exact strategies: ``explicit`` stores J_0 on the train and test sets (``(N, P)``,
    computed once with ``vmap(jacrev)``), so a step costs two ``(N, P)`` products; ``jvp``
    recomputes J_0 delta by forward-mode AD and J_0^T r by a stored ``vjp`` through the time
    loop, memory O(N T n) but several network passes per step. ``auto`` picks ``explicit``
    when the Jacobians fit :data:`JACOBIAN_BUDGET_BYTES`.
    """

    def __init__(
        self,
        model: ElmanRNN,
        xs: Sequences,
        xt: Sequences,
        theta0: dict,
        f_train: Callable[[dict], torch.Tensor],
        f_test: Callable[[dict], torch.Tensor],
        f0_train: torch.Tensor,
        f0_test: torch.Tensor,
        settings: TrainSettings,
        strategy: str = "auto",
    ) -> None:
        self.names = list(theta0)
        self.shapes = [theta0[n].shape for n in self.names]
        self.sizes = [theta0[n].numel() for n in self.names]
        numel = sum(self.sizes)
        ref = theta0[self.names[0]]
        need = (xs.n + xt.n) * numel * ref.element_size()
        if strategy not in ("auto", "explicit", "jvp"):
            raise ValueError(f"strategy={strategy!r}; allowed values: auto, explicit, jvp")
        self.explicit = strategy == "explicit" or (
            strategy == "auto" and need <= JACOBIAN_BUDGET_BYTES
        )
        self.theta0, self.f0_train, self.f0_test = theta0, f0_train, f0_test
        self.delta = torch.zeros(numel, dtype=ref.dtype, device=ref.device, requires_grad=True)
        self.opt = _make_optimizer(settings, [self.delta])
        self.f_train, self.f_test = f_train, f_test  # params -> outputs on train / test
        if self.explicit:
            self.J_train = self._jacobian(model, xs)
            self.J_test = self._jacobian(model, xt)
        else:
            with torch.enable_grad():
                _, self._vjp_train = vjp(self.f_train, theta0)  # J_0^T, reused every step

    def _jacobian(self, model: ElmanRNN, seqs: Sequences, chunk: int = 4) -> torch.Tensor:
        parts = []
        for i in range(0, seqs.n, chunk):
            # at theta_0, not the model's current parameters (they differ after a resume)
            jac = per_example_jacobians(model, seqs.select(slice(i, i + chunk)), self.theta0)
            parts.append(torch.cat([jac[n][:, 0] for n in self.names], dim=1))
        return torch.cat(parts)

    def _unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            n: t.view(s) for n, t, s in zip(self.names, torch.split(v, self.sizes), self.shapes)
        }

    def outputs(self, which: str) -> torch.Tensor:
        f0 = self.f0_train if which == "train" else self.f0_test
        d = self.delta.detach()
        if self.explicit:
            return f0 + (self.J_train if which == "train" else self.J_test) @ d
        fn = self.f_train if which == "train" else self.f_test
        return f0 + jvp(fn, (self.theta0,), (self._unflatten(d),))[1]

    def step(self, batch: torch.Tensor, ys: torch.Tensor) -> None:
        """One optimizer step on 1/(2|B|) sum_{i in B} (f_lin(x_i) - y_i)^2."""
        with torch.no_grad():
            r = self.outputs("train") - ys
            cot = torch.zeros_like(r)
            cot[batch] = r[batch] / len(batch)
            if self.explicit:
                g = self.J_train.T @ cot
            else:
                (gd,) = self._vjp_train(cot)
                g = torch.cat([gd[n].reshape(-1) for n in self.names])
        self.delta.grad = g.detach()
        self.opt.step()

    def state_dict(self) -> dict:
        return {"delta": self.delta.detach().clone(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.delta.copy_(state["delta"])
        self.opt.load_state_dict(state["opt"])


# --------------------------------------------------------------------------- the trainer


@dataclass
class TrainState:
    """What :func:`fit` shares with its callbacks.

    ``step`` is the current step (the parameters have taken ``step`` updates); ``batch`` the
    indices of this step's minibatch; ``loss`` this step's loss tensor (with its graph) and
    ``loss_value`` its float; ``loss0`` the first step's loss value (the divergence reference).
    """

    model: ElmanRNN
    params: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    batch: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    loss_value: float = float("nan")
    loss0: float | None = None
    diverged: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0

    def diverge(self) -> None:
        """Mark the run diverged at this step; the trainer stops after the record hooks."""
        self.diverged, self.diverged_at = True, self.step


class Callback:
    """Hooks of :func:`fit`; each is optional. A callback that has state to resume lists its
    checkpoint keys in ``state_keys`` and returns them from :meth:`state_dict`."""

    state_keys: tuple[str, ...] = ()

    def on_start(self, state: TrainState, checkpoint: dict | None) -> None:
        """Before the first step; ``checkpoint`` is the resumed checkpoint or None (fresh)."""

    def on_record(self, state: TrainState) -> None:
        """At steps 0, ``record_every``, ... and the last, after the loss of that step is known;
        also when that loss diverged (``state.diverged``), so a callback can record the failure
        or skip it. A callback may call ``state.diverge()`` (its own stopping rule)."""

    def after_step(self, state: TrainState) -> None:
        """After the optimizer step of ``state.step`` (before progress and checkpoint)."""

    def on_end(self, state: TrainState) -> None:
        """After the last step, or after the step that diverged."""

    def state_dict(self) -> dict:
        """The callback's checkpoint entries (keys ``state_keys``)."""
        return {}


def fit(
    model: ElmanRNN,
    loss_fn: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
    n_train: int,
    settings: TrainSettings,
    callbacks: Sequence[Callback] = (),
    diverge_on_growth: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    config_hash: str | None = None,
    strict_checkpoint: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TrainState:
    """The one training loop: ``settings.steps`` optimizer steps on ``loss_fn`` with callbacks.

    Step s (0 <= s <= steps): draw the minibatch B (``sgd`` with ``batch_size``; otherwise all
    ``n_train`` indices), evaluate ``loss = loss_fn(params, B)`` (params: the model's live
    parameters by name); a NaN/Inf loss, or with ``diverge_on_growth`` a loss above
    ``settings.diverge_factor`` times the first step's loss, marks the run diverged. At record
    steps the callbacks' :meth:`Callback.on_record` run; a diverged run then stops (as does the
    last step); otherwise the optimizer takes the gradient step, the callbacks'
    :meth:`Callback.after_step` run, ``progress(s + 1)`` is called, and every
    ``settings.checkpoint_every`` steps the trainer's and callbacks' state is written
    atomically to ``checkpoint_path``. An existing checkpoint there is resumed when
    :func:`resume_checkpoint` accepts it (safe loader, same ``config_hash``, all keys present);
    otherwise the run starts afresh with a one-line :class:`CheckpointWarning`
    (``strict_checkpoint``: :class:`CheckpointError`).

    Returns:
        The final :class:`TrainState` (``diverged``, ``diverged_at``, ``seconds``).
    """
    params = dict(model.named_parameters())
    opt = _make_optimizer(settings, list(params.values()))
    gen = torch.Generator().manual_seed(settings.seed)
    state = TrainState(model, params, opt, gen)
    keys = TRAINER_CHECKPOINT_KEYS + tuple(k for cb in callbacks for k in cb.state_keys)
    if len(set(keys)) != len(keys):
        raise ValueError(f"checkpoint keys of the trainer and callbacks collide: {keys}")
    ck = resume_checkpoint(checkpoint_path, config_hash, params, keys, strict_checkpoint)
    if ck is not None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(ck["params"][n])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        state.step, state.loss0, state.seconds = ck["step"], ck["loss0"], ck["seconds"]
    for cb in callbacks:
        cb.on_start(state, ck)
    device = next(iter(params.values())).device
    t_start = time.perf_counter() - state.seconds
    for step in range(state.step, settings.steps + 1):
        state.step = step
        last = step == settings.steps
        state.batch = _batch(n_train, settings, gen, device)
        with torch.enable_grad():
            state.loss = loss_fn(params, state.batch)
        state.loss_value = lv = float(state.loss.detach())
        if state.loss0 is None:
            state.loss0 = lv
        if not math.isfinite(lv) or (
            diverge_on_growth and lv > settings.diverge_factor * max(state.loss0, 1e-30)
        ):
            state.diverge()
        if step % settings.record_every == 0 or last:
            for cb in callbacks:
                cb.on_record(state)
        if state.diverged or last:
            break
        opt.zero_grad(set_to_none=True)
        state.loss.backward()
        opt.step()
        for cb in callbacks:
            cb.after_step(state)
        if progress is not None:
            progress(step + 1)
        if checkpoint_path and (step + 1) % settings.checkpoint_every == 0:
            state.seconds = time.perf_counter() - t_start
            entries = {
                "step": step + 1,
                "params": {n: p.detach() for n, p in params.items()},
                "opt": opt.state_dict(),
                "gen": gen.get_state(),
                "loss0": state.loss0,
                "seconds": state.seconds,
                "config_hash": config_hash,
            }
            for cb in callbacks:
                entries.update(cb.state_dict())
            atomic_torch_save(checkpoint_path, entries)
    state.loss = None  # drop the graph
    state.seconds = time.perf_counter() - t_start
    for cb in callbacks:
        cb.on_end(state)
    return state


# --------------------------------------------------------------------------- drift tracking
class DriftTracker(Callback):
    """The drift experiment's callback: the loss 1/(2|B|) sum_{i in B} (f(x_i) - y_i)^2
    (:meth:`loss`), the linearized twin (:class:`Linearization`, stepped after each network
    step) and a :class:`History` row at every record step (see :func:`train_and_track`).
    A recorded train loss above ``settings.diverge_factor`` times the initial one, or NaN/Inf,
    stops the run as diverged."""

    state_keys = ("lin", "theta0", "history", "ntk0")

    def __init__(
        self,
        model: ElmanRNN,
        train: tuple[Sequences, torch.Tensor],
        test: tuple[Sequences, torch.Tensor],
        probe: Sequences,
        settings: TrainSettings,
        kernel_predictions: dict[str, KernelPredictions] | None = None,
    ) -> None:
        (self.xs, self.ys), (self.xt, self.yt) = train, test
        if self.ys.shape != (self.xs.n,) or self.yt.shape != (self.xt.n,):
            raise ValueError("targets must be (N,) tensors matching their sequences")
        self.model, self.probe, self.settings = model, probe, settings
        self.kernel_predictions = kernel_predictions
        self.args_train = model.forward_args(self.xs)
        self.args_test = model.forward_args(self.xt)
        self.history = History()
        self.lin: Linearization | None = None

    def f_train(self, p: dict) -> torch.Tensor:
        return self.model.apply_padded(p, *self.args_train)[:, 0]

    def f_test(self, p: dict) -> torch.Tensor:
        return self.model.apply_padded(p, *self.args_test)[:, 0]

    def loss(self, params: dict, batch: torch.Tensor) -> torch.Tensor:
        """1/(2|B|) sum_{i in B} (f(x_i) - y_i)^2."""
        return 0.5 * ((self.f_train(params) - self.ys)[batch] ** 2).mean()

    def on_start(self, state: TrainState, checkpoint: dict | None) -> None:
        model = self.model
        if checkpoint is not None:
            dev = next(iter(state.params.values())).device
            self.theta0 = {n: t.to(dev) for n, t in checkpoint["theta0"].items()}
            self.history = History(**checkpoint["history"])
            self.ntk0 = checkpoint["ntk0"].to(dev)
        else:
            self.theta0 = {n: p.detach().clone() for n, p in model.named_parameters()}
            self.ntk0 = empirical_ntk(model, self.probe)
        with torch.no_grad():
            f0_train, f0_test = self.f_train(self.theta0), self.f_test(self.theta0)
        if self.settings.track_linearized:
            self.lin = Linearization(
                model,
                self.xs,
                self.xt,
                self.theta0,
                self.f_train,
                self.f_test,
                f0_train,
                f0_test,
                self.settings,
                self.settings.linearization,
            )
            if checkpoint is not None and checkpoint["lin"] is not None:
                self.lin.load_state_dict(checkpoint["lin"])
        self.loss0 = mse(f0_train, self.ys)

    def on_record(self, state: TrainState) -> None:
        hist, step = self.history, state.step
        if step not in hist.step:
            _record(
                hist,
                step,
                self.model,
                self.f_train,
                self.f_test,
                self.ys,
                self.yt,
                self.probe,
                self.ntk0,
                self.theta0,
                self.lin,
                self.kernel_predictions,
                self.settings,
            )
        last = hist.train_loss[-1]
        if not math.isfinite(last) or last > self.settings.diverge_factor * max(self.loss0, 1e-30):
            state.diverge()

    def after_step(self, state: TrainState) -> None:
        # linearized step: gradient J_0^T r / |batch| with r restricted to the batch
        if self.lin is not None:
            self.lin.step(state.batch, self.ys)

    def on_end(self, state: TrainState) -> None:
        self.history.diverged, self.history.diverged_at = state.diverged, state.diverged_at
        self.history.seconds = state.seconds

    def state_dict(self) -> dict:
        return {
            "lin": None if self.lin is None else self.lin.state_dict(),
            "theta0": self.theta0,
            "history": asdict(self.history),
            "ntk0": self.ntk0,
        }


def train_and_track(
    model: ElmanRNN,
    train: tuple[Sequences, torch.Tensor],
    test: tuple[Sequences, torch.Tensor],
    probe: Sequences,
    settings: TrainSettings,
    kernel_predictions: dict[str, KernelPredictions] | None = None,
    checkpoint_path: str | None = None,
    progress: Callable[[int], None] | None = None,
    config_hash: str | None = None,
    strict_checkpoint: bool = False,
) -> History:
    """Train ``model`` in place and record the quantities listed in the module docstring:
    :func:`fit` with a :class:`DriftTracker` (the network's own divergence rule: a NaN/Inf
    minibatch loss; the tracker's: the recorded train loss).

    Args:
        model: the network (its current parameters are theta_0, unless resuming).
        train, test: (sequences, targets ``(N,)``) prepared with ``model.prepare``.
        probe: the fixed sequences on which the NTK drift is measured.
        settings: :class:`TrainSettings`.
        kernel_predictions: optional ``{"empirical": ..., "analytic": ...}`` closed-form
            predictions at steps ``0, record_every, ...`` (see
            :func:`rntk_empirical.kernel_machines.gradient_descent_mse`).
        checkpoint_path: where to checkpoint; an existing checkpoint is resumed when it is
            readable, complete and was written by the same configuration (see
            :func:`load_checkpoint`); otherwise the run starts afresh with a one-line
            :class:`CheckpointWarning` and overwrites it.
        progress: called with the number of steps done after each step.
        config_hash: identity of the configuration that trains (the caller's hash of training
            settings, architecture, width and seed); stored in every checkpoint and required
            to match on resume. None: not stored, and any checkpoint's hash is accepted.
        strict_checkpoint: raise :class:`CheckpointError` instead of warning and starting
            afresh.

    Returns:
        The :class:`History`.
    """
    tracker = DriftTracker(model, train, test, probe, settings, kernel_predictions)
    fit(
        model,
        tracker.loss,
        tracker.xs.n,
        settings,
        [tracker],
        diverge_on_growth=False,
        checkpoint_path=checkpoint_path,
        config_hash=config_hash,
        strict_checkpoint=strict_checkpoint,
        progress=progress,
    )
    return tracker.history


def load_checkpoint(
    path: str | os.PathLike,
    config_hash: str | None = None,
    params: dict[str, torch.Tensor] | None = None,
    keys: tuple[str, ...] = CHECKPOINT_KEYS,
) -> tuple[dict | None, str | None]:
    """Read a training checkpoint without running code from it: ``(checkpoint, None)``, or
    ``(None, reason)`` with a one-line reason when it cannot be resumed.

    The file is loaded with :func:`rntk_empirical.safe_io.load_torch` (tensors and plain
    containers only: a pickled object is refused, never executed; a checkpoint written on CUDA
    loads on any machine). It is refused when it is damaged or not a checkpoint, lacks one of
    ``keys`` (default :data:`CHECKPOINT_KEYS`), was written with another ``config_hash`` (when
    one is given), or its parameters do not match ``params`` (``{name: tensor}``) in names and
    shapes.
    """
    try:
        ck = load_torch(path)
    except UnreadableFile as err:
        return None, str(err).removeprefix(f"{path}: ")
    if not isinstance(ck, dict) or any(k not in ck for k in keys):
        return None, "not a complete training checkpoint"
    if config_hash is not None and ck.get("config_hash") != config_hash:
        return None, (
            f"written by another configuration (hash {ck.get('config_hash')!r}, "
            f"this run {config_hash!r})"
        )
    saved = ck["params"]
    if params is not None and (
        not isinstance(saved, dict)
        or set(saved) != set(params)
        or any(
            not isinstance(saved[n], torch.Tensor) or saved[n].shape != p.shape
            for n, p in params.items()
        )
    ):
        return None, "its parameters do not match this network (names or shapes)"
    return ck, None


def resume_checkpoint(
    path: str | os.PathLike | None,
    config_hash: str | None,
    params: dict[str, torch.Tensor],
    keys: tuple[str, ...] = CHECKPOINT_KEYS,
    strict: bool = False,
) -> dict | None:
    """The checkpoint a trainer resumes from, or None (no ``path``, no file, or a file that
    :func:`load_checkpoint` refuses: then a one-line :class:`CheckpointWarning` says why and
    the seed starts afresh; with ``strict`` a :class:`CheckpointError` is raised instead)."""
    if not path or not os.path.exists(path):
        return None
    ck, why = load_checkpoint(path, config_hash, params, keys)
    if ck is None:
        if strict:
            raise CheckpointError(f"checkpoint {path}: {why}")
        warnings.warn(
            f"checkpoint {path}: {why}; starting this seed afresh", CheckpointWarning, stacklevel=3
        )
    return ck


def _make_optimizer(settings: TrainSettings, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr)
    # GD on the mean loss 1/(2B) sum: plain SGD without momentum
    return torch.optim.SGD(params, lr=settings.lr)


def _batch(n: int, settings: TrainSettings, gen: torch.Generator, device) -> torch.Tensor:
    if settings.optimizer != "sgd" or settings.batch_size is None or settings.batch_size >= n:
        return torch.arange(n, device=device)
    return torch.randperm(n, generator=gen)[: settings.batch_size].to(device)


def _record(
    hist,
    step,
    model,
    f_train,
    f_test,
    ys,
    yt,
    probe,
    ntk0,
    theta0,
    lin,
    kp,
    settings,
) -> None:
    params = {n: p.detach() for n, p in model.named_parameters()}
    with torch.no_grad():
        ft, fs = f_train(params), f_test(params)
    ntk = empirical_ntk(model, probe)
    hist.step.append(step)
    hist.train_loss.append(mse(ft, ys))
    hist.test_loss.append(mse(fs, yt))
    hist.ntk_drift.append(relative_drift(ntk, ntk0))
    hist.kernel_distance.append(kernel_distance(ntk, ntk0))
    changes = {
        n: float((params[n] - theta0[n]).norm() / theta0[n].norm().clamp_min(1e-300))
        for n in params
    }
    hist.weight_change.append(changes)
    num = sum(float((params[n] - theta0[n]).norm() ** 2) for n in params)
    den = sum(float(theta0[n].norm() ** 2) for n in params)
    hist.weight_change_total.append(math.sqrt(num / den))
    f_all = torch.cat([ft, fs])
    nan = float("nan")
    if lin is not None:
        with torch.no_grad():
            lt, ls = lin.outputs("train"), lin.outputs("test")
        hist.lin_train_loss.append(mse(lt, ys))
        hist.lin_test_loss.append(mse(ls, yt))
        hist.dist_linearized.append(rms(f_all - torch.cat([lt, ls])))
    else:
        lt = ls = None
        hist.lin_train_loss.append(nan)
        hist.lin_test_loss.append(nan)
        hist.dist_linearized.append(nan)
    idx = step // settings.record_every if step % settings.record_every == 0 else None
    for key, dist, loss in (
        ("empirical", hist.dist_kernel_empirical, hist.kernel_empirical_train_loss),
        ("analytic", hist.dist_kernel_analytic, hist.kernel_analytic_train_loss),
    ):
        pred = None if kp is None else kp.get(key)
        if pred is None or idx is None or idx >= pred.train.shape[0]:
            dist.append(nan)
            loss.append(nan)
            if key == "empirical":
                hist.dist_lin_vs_kernel_empirical.append(nan)
            continue
        kt, ks = pred.train[idx], pred.test[idx]
        dist.append(rms(f_all - torch.cat([kt, ks])))
        loss.append(mse(kt, ys))
        if key == "empirical":
            hist.dist_lin_vs_kernel_empirical.append(
                nan if lt is None else rms(torch.cat([lt, ls]) - torch.cat([kt, ks]))
            )


# Quantities computed from GD on the linearization or with the network's own Theta_0.
THETA0_QUANTITIES = (
    "dist_linearized",
    "dist_kernel_empirical",
    "dist_lin_vs_kernel_empirical",
    "lin_train_loss",
    "lin_test_loss",
    "kernel_empirical_train_loss",
)
