"""The training loop from scratch: the lecture's gradient-descent spreadsheet, in code.

We generate `y = a*x + b + noise` and learn `a` and `b`:

1. with gradients from **finite differences** (nudge a parameter, watch the loss move),
2. with **analytic gradients** from the chain rule (and check they agree with 1.),
3. with **autograd** (and check it agrees with 2.);

then train with optimisers written from scratch on plain tensors — SGD, SGD with momentum,
Adam and AdamW (exponentially weighted averages of the gradient and of its square, with bias
correction) — printing the loss per epoch and how many iterations each needs to reach a
target loss. Each hand-written optimiser is cross-checked against its `torch.optim`
counterpart on the same data and batches: the parameter trajectories must agree to float
tolerance (the script asserts it).

Everything runs in float64, so any disagreement would be a difference in the algorithm, not
rounding. Run it with `python examples/training_loop_from_scratch.py` (`--quick` for a
smaller run); the test suite calls `main(quick=True)`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import torch

DTYPE = torch.float64
A_TRUE, B_TRUE, NOISE = 3.0, 8.0, 1.0
A_INIT, B_INIT = 1.0, 1.0


# --------------------------------------------------------------------------------------------
# The data and the loss
# --------------------------------------------------------------------------------------------


def make_data(n: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` points of `y = A_TRUE*x + B_TRUE + noise`, with `x` uniform in [1, 2).

    With `x` away from 0, raising `a` and lowering `b` nearly cancel: the loss is a long,
    narrow valley, steep across and shallow along it. Plain SGD must take small steps (or it
    bounces across the valley) and then crawls along it; that is where momentum helps.
    """
    g = torch.Generator().manual_seed(seed)
    x = 1 + torch.rand(n, generator=g, dtype=DTYPE)
    y = A_TRUE * x + B_TRUE + NOISE * torch.randn(n, generator=g, dtype=DTYPE)
    return x, y


def mse(a, b, x: torch.Tensor, y: torch.Tensor):
    """Mean squared error of the line `a*x + b` on `(x, y)`."""
    return ((a * x + b - y) ** 2).mean()


def best_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """The least-squares `(a, b)` and its loss: the floor no optimiser can go below."""
    X = torch.stack([x, torch.ones_like(x)], 1)
    a, b = torch.linalg.lstsq(X, y[:, None]).solution.squeeze(1).tolist()
    return a, b, float(mse(a, b, x, y))


# --------------------------------------------------------------------------------------------
# Three ways to get the gradient
# --------------------------------------------------------------------------------------------

Grad = Callable[[float, float, torch.Tensor, torch.Tensor], tuple[float, float]]


def grad_finite_diff(a: float, b: float, x, y, h: float = 1e-6) -> tuple[float, float]:
    """Central differences: `(L(a+h) - L(a-h)) / 2h`, the spreadsheet's "nudge and look"."""
    da = (float(mse(a + h, b, x, y)) - float(mse(a - h, b, x, y))) / (2 * h)
    db = (float(mse(a, b + h, x, y)) - float(mse(a, b - h, x, y))) / (2 * h)
    return da, db


def grad_analytic(a: float, b: float, x, y) -> tuple[float, float]:
    """The chain rule on `L = mean(e**2)`, `e = a*x + b - y`:
    `dL/da = mean(2*e*x)` and `dL/db = mean(2*e)`."""
    e = a * x + b - y
    return float((2 * e * x).mean()), float((2 * e).mean())


def grad_autograd(a: float, b: float, x, y) -> tuple[float, float]:
    """Let PyTorch record the computation and run it backwards."""
    a_t = torch.tensor(a, dtype=DTYPE, requires_grad=True)
    b_t = torch.tensor(b, dtype=DTYPE, requires_grad=True)
    mse(a_t, b_t, x, y).backward()
    return float(a_t.grad), float(b_t.grad)


def max_gap(path1: Sequence[Sequence[float]], path2: Sequence[Sequence[float]],
            relative: bool = False) -> float:
    """The largest difference between two equally long sequences of `(a, b)` pairs
    (`relative`: divided by `max(1, |value in path2|)`)."""
    return max(
        abs(p - q) / (max(1.0, abs(q)) if relative else 1.0)
        for s, t in zip(path1, path2, strict=True)
        for p, q in zip(s, t, strict=True)
    )


def gradient_descent(grad_fn: Grad, x, y, lr: float = 0.25, steps: int = 300) -> list[tuple]:
    """Full-batch gradient descent from `(A_INIT, B_INIT)`; the `(a, b)` after every step."""
    a, b, path = A_INIT, B_INIT, []
    for _ in range(steps):
        da, db = grad_fn(a, b, x, y)
        a, b = a - lr * da, b - lr * db
        path.append((a, b))
    return path


def compare_gradients(x, y, steps: int = 300, verbose: bool = True) -> dict:
    """Part 1: learn `a`, `b` with each kind of gradient; check that they all agree."""
    points = [(A_INIT, B_INIT), (0.0, 0.0), (-2.0, 5.0), (A_TRUE, B_TRUE)]
    worst_fd = worst_ag = 0.0
    for a, b in points:
        fd, an, ag = (f(a, b, x, y) for f in (grad_finite_diff, grad_analytic, grad_autograd))
        worst_fd = max(worst_fd, max_gap([fd], [an], relative=True))
        worst_ag = max(worst_ag, max_gap([ag], [an], relative=True))
        if verbose:
            print(f"  at a={a:5.2f} b={b:5.2f}: finite diff ({fd[0]:9.5f}, {fd[1]:9.5f})  "
                  f"analytic ({an[0]:9.5f}, {an[1]:9.5f})  autograd ({ag[0]:9.5f}, {ag[1]:9.5f})")
    # Central differences are exact for a quadratic up to rounding; autograd does the same
    # arithmetic as the chain rule, so it agrees to the last few bits.
    assert worst_fd < 1e-6, f"finite differences disagree with the chain rule by {worst_fd:.2e}"
    assert worst_ag < 1e-12, f"autograd disagrees with the chain rule by {worst_ag:.2e}"
    paths = {f.__name__: gradient_descent(f, x, y, steps=steps)
             for f in (grad_finite_diff, grad_analytic, grad_autograd)}
    ends = {k: p[-1] for k, p in paths.items()}
    path_gap = max(max_gap(p, paths["grad_analytic"]) for p in paths.values())
    assert path_gap < 1e-5, f"gradient-descent paths differ by {path_gap:.2e}"
    if verbose:
        for k, (a, b) in ends.items():
            print(f"  {steps} steps of gradient descent with {k:17s}: a={a:.5f} b={b:.5f}")
        print(f"  largest relative gradient gap: finite diff {worst_fd:.1e}, autograd "
              f"{worst_ag:.1e}; largest gap between the descent paths {path_gap:.1e}")
    return {"fd_gap": worst_fd, "autograd_gap": worst_ag, "path_gap": path_gap, "ends": ends}


# --------------------------------------------------------------------------------------------
# Optimisers from scratch. Same interface as torch.optim (step, zero_grad), so the same loop
# can drive either and we can compare them step by step.
# --------------------------------------------------------------------------------------------


class Optimizer:
    """What every optimiser here shares: the parameters, and how to clear their gradients."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float):
        self.params, self.lr = list(params), lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class SGD(Optimizer):
    """`p <- p - lr * grad`."""

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            p -= self.lr * p.grad


class SGDMomentum(Optimizer):
    """`v <- mom * v + grad; p <- p - lr * v` (PyTorch's convention; `v` starts at `grad`).

    `v` is the exponentially weighted average of the gradients `(1-mom) * sum(mom**k g_k)`
    scaled by `1/(1-mom)`: the spreadsheet's "momentum" column with `lr` absorbing that factor.
    """

    def __init__(self, params, lr: float, mom: float = 0.9):
        super().__init__(params, lr)
        self.mom, self.v = mom, [None] * len(self.params)

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            self.v[i] = p.grad.clone() if self.v[i] is None else self.mom * self.v[i] + p.grad
            p -= self.lr * self.v[i]


class Adam(Optimizer):
    """Adam: exponentially weighted averages of the gradient (`m`) and of its square (`v`).

    Both averages start at 0, so early on they are biased towards 0; dividing by
    `1 - beta**t` removes that bias (the same debiasing `fit` applies to its loss average).
    The step is `lr * m_hat / (sqrt(v_hat) + eps)`: about `lr` in size whatever the
    gradient's scale.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.t = eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for i, p in enumerate(self.params):
            self.decay(p)
            g = p.grad
            self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * g
            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * g * g
            m_hat = self.m[i] / (1 - self.beta1**self.t)
            v_hat = self.v[i] / (1 - self.beta2**self.t)
            p -= self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def decay(self, p: torch.Tensor) -> None:
        """Plain Adam has no weight decay."""


class AdamW(Adam):
    """Adam with decoupled weight decay: `p <- p * (1 - lr * wd)`, then the Adam step.

    Unlike L2 added to the loss (whose gradient Adam would rescale by `1/sqrt(v_hat)`), the
    decay here shrinks every weight by the same fraction. This is what minifast's
    `set_wds(opt, wd, decoupled=True)` does with any optimiser.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps)
        self.wd = weight_decay

    def decay(self, p: torch.Tensor) -> None:
        p *= 1 - self.lr * self.wd


# name -> (hand-written, torch.optim's, keyword arguments for both).
# The learning rates are roughly the best of 0.01, 0.03, 0.1, 0.3 and 1 for each optimiser
# on this problem (SGD at 0.3 already bounces across the valley).
OPTIMISERS: dict[str, tuple[Callable, Callable, dict]] = {
    "SGD": (SGD, lambda ps, lr: torch.optim.SGD(ps, lr=lr), {"lr": 0.1}),
    "SGD+momentum": (
        lambda ps, lr: SGDMomentum(ps, lr, mom=0.9),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
        {"lr": 0.1},
    ),
    "Adam": (
        lambda ps, lr: Adam(ps, lr),
        lambda ps, lr: torch.optim.Adam(ps, lr=lr),
        {"lr": 1.0},
    ),
    # Weight decay pulls (a, b) towards 0, away from the data's optimum: on a problem that
    # cannot overfit it only costs a little accuracy. It earns its keep on big models.
    "AdamW": (
        lambda ps, lr: AdamW(ps, lr, weight_decay=1e-2),
        lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=1e-2),
        {"lr": 1.0},
    ),
}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train(make_opt: Callable, x, y, epochs: int = 5, bs: int = 20, seed: int = 1,
          target: float | None = None) -> dict:
    """Mini-batch training of `(a, b)` from `(A_INIT, B_INIT)` with the optimiser `make_opt`
    builds from `[a, b]`. Batches are a seeded permutation per epoch, so two runs with the
    same seed see the same batches. Returns the `(a, b)` after every step, the full-data loss
    after every step and every epoch, and the first iteration whose loss is <= `target`."""
    a = torch.tensor(A_INIT, dtype=DTYPE, requires_grad=True)
    b = torch.tensor(B_INIT, dtype=DTYPE, requires_grad=True)
    opt = make_opt([a, b])
    g = torch.Generator().manual_seed(seed)
    path, losses, epoch_losses, hit = [], [], [], None
    for _epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            mse(a, b, x[idx], y[idx]).backward()
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                loss = float(mse(a, b, x, y))
            path.append((a.item(), b.item()))
            losses.append(loss)
            if hit is None and target is not None and loss <= target:
                hit = len(losses)
        epoch_losses.append(losses[-1])
    return {"path": path, "losses": losses, "epoch_losses": epoch_losses, "iters_to_target": hit}


def cross_check(x, y, epochs: int, bs: int, atol: float = 1e-9, verbose: bool = True) -> dict:
    """Part 2: each hand-written optimiser against torch.optim's on the same batches.

    Returns, per optimiser, both runs and the largest gap between their `(a, b)` trajectories;
    asserts that the gap is below `atol`.
    """
    *_, floor = best_fit(x, y)
    target = 1.05 * floor
    results = {}
    for name, (mine, theirs, kw) in OPTIMISERS.items():
        ours = train(lambda ps, m=mine, kw=kw: m(ps, **kw), x, y, epochs, bs, target=target)
        ref = train(lambda ps, t=theirs, kw=kw: t(ps, **kw), x, y, epochs, bs, target=target)
        gap = max_gap(ours["path"], ref["path"])
        assert gap < atol, f"{name}: hand-written and torch.optim differ by {gap:.2e}"
        results[name] = {"ours": ours, "torch": ref, "gap": gap}
    if verbose:
        names = list(results)
        print(f"  full-data loss after each epoch (least-squares floor {floor:.4f}, start "
              f"{float(mse(A_INIT, B_INIT, x, y)):.4f}):")
        print("  epoch " + "".join(f"{n:>14}" for n in names))
        for e in range(epochs):
            print(f"  {e:5d} " + "".join(f"{results[n]['ours']['epoch_losses'][e]:14.5f}"
                                         for n in names))
        print(f"  iterations to reach loss <= {target:.4f} (1.05 x floor), and the largest gap "
              f"to torch.optim's trajectory:")
        for n in names:
            it = results[n]["ours"]["iters_to_target"]
            a, b = results[n]["ours"]["path"][-1]
            print(f"  {n:>14}: {('never' if it is None else it):>6}  (a={a:.4f}, b={b:.4f})  "
                  f"gap {results[n]['gap']:.1e}")
    return {"floor": floor, "target": target, "results": results}


def minifast_adamw_check(x, y, bs: int = 20, steps: int = 50) -> float:
    """minifast's decoupled weight decay (`set_wds(..., decoupled=True)` + plain Adam, stepped
    by `Stepper`) against the hand-written AdamW: the largest gap between the trajectories."""
    from minifast import Stepper, set_wds

    class Line(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(A_INIT, dtype=DTYPE))
            self.b = torch.nn.Parameter(torch.tensor(B_INIT, dtype=DTYPE))

        def forward(self, x):
            return self.a * x + self.b

    model = Line()
    opt = torch.optim.Adam(model.parameters(), lr=0.3)
    set_wds(opt, 1e-2, decoupled=True)
    stepper = Stepper(model, opt, torch.nn.functional.mse_loss)
    a = torch.tensor(A_INIT, dtype=DTYPE, requires_grad=True)
    b = torch.tensor(B_INIT, dtype=DTYPE, requires_grad=True)
    mine = AdamW([a, b], 0.3, weight_decay=1e-2)
    gap = 0.0
    for i in range(steps):
        sl = slice((i * bs) % len(x), (i * bs) % len(x) + bs)
        stepper.step([x[sl]], y[sl])
        mse(a, b, x[sl], y[sl]).backward()
        mine.step()
        mine.zero_grad()
        gap = max(gap, abs(model.a.item() - a.item()), abs(model.b.item() - b.item()))
    assert gap < 1e-9, f"minifast's decoupled weight decay differs from AdamW by {gap:.2e}"
    return gap


def main(quick: bool = False, verbose: bool = True) -> dict:
    """Run every part; `quick` shrinks the data and the number of epochs (for the tests)."""
    n, epochs, bs = (1000, 2, 20) if quick else (1000, 8, 20)
    x, y = make_data(n)
    a_fit, b_fit, floor = best_fit(x, y)
    if verbose:
        print(f"data: {n} points of y = {A_TRUE}*x + {B_TRUE} + N(0, {NOISE}**2); least squares "
              f"gives a={a_fit:.4f} b={b_fit:.4f} loss={floor:.4f}\n")
        print("1. Gradients three ways, and gradient descent with each")
    grads = compare_gradients(x, y, steps=30 if quick else 300, verbose=verbose)
    if verbose:
        print(f"\n2. Optimisers from scratch vs torch.optim ({epochs} epochs, batch size {bs})")
    opts = cross_check(x, y, epochs, bs, verbose=verbose)
    gap = minifast_adamw_check(x, y, bs)
    if verbose:
        print(f"\n3. minifast Stepper with set_wds(decoupled=True) + Adam vs hand-written AdamW: "
              f"largest gap {gap:.1e}")
    return {"grads": grads, "optimisers": opts, "minifast_adamw_gap": gap,
            "best_fit": (a_fit, b_fit, floor)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer epochs")
    args = ap.parse_args()
    main(quick=args.quick)
    print(f"\nall checks passed ({'quick' if args.quick else 'full'} run)")
