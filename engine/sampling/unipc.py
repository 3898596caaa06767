"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), data prediction, in
σ-space with λ = −log σ.

Each step predicts x at σ_next from the current and previous x̂₀'s (UniP, a multistep exponential
integrator), then — once the model has been called at σ_next, which the next step needs anyway —
corrects that x with the new x̂₀ (UniC), raising the order by one at no extra model call.

Coefficients: with r_k = (λ_k − λ_0)/h for earlier points and D_k = (x̂₀_k − x̂₀_0)/r_k,
  bh1 / bh2: solve Σ_k ρ_k r_k^(i−1) = i!·h·φ_{i+1}(h)/B(h), B = h (bh1) or e^h − 1 (bh2);
  vary_coeff: the exact φ-weights of the interpolating polynomial (the paper's UniPC_v).
The final step to σ = 0 is x = x̂₀ (first order): λ = ∞ there and higher-order terms would diverge.
"""

from __future__ import annotations

import math

import torch

from engine.sampling.base import VE, SamplerOptions, report


def _phis(hh: float, count: int) -> list[float]:
    """h·φ_k-type values the original UniPC recursion produces: [e^hh − 1, …], `count` of them."""
    values, factorial, value = [], 1, math.expm1(hh)
    for k in range(1, count + 1):
        values.append(value)
        value = value / hh - 1 / factorial
        factorial *= k + 1
    return values


def _bh_rhos(rks: list[float], hh: float, variant: str) -> tuple[list[float], list[float], float]:
    """(ρ_predictor, ρ_corrector, B(h)) for the bh variants; rks ends with 1 (the new point)."""
    order = len(rks)
    b_h = hh if variant == "bh1" else math.expm1(hh)
    phis = _phis(hh, order + 1)
    # b_i = h_phi_{i} · i! / B(h) for i = 1..order (the recursion's second value onwards)
    b, factorial = [], 1
    for i in range(1, order + 1):
        b.append(phis[i] * factorial / b_h)
        factorial *= i + 1
    matrix = torch.tensor([[r ** (i - 1) for r in rks] for i in range(1, order + 1)], dtype=torch.float64)
    vector = torch.tensor(b, dtype=torch.float64)
    if order == 1:
        rhos_p = []
    elif order == 2:
        rhos_p = [0.5]
    else:
        rhos_p = torch.linalg.solve(matrix[:-1, :-1], vector[:-1]).tolist()
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(matrix, vector).tolist()
    return rhos_p, rhos_c, b_h


def _vary_weights(rks: list[float], hh: float) -> tuple[list[list[float]], list[list[float]], list[float]]:
    """UniPC_v: inverse of C[j][k] = r_j^k / (k+1)! (predictor: without the new point) and the φ's."""
    k_total = len(rks)
    c = torch.tensor(
        [[r**k / math.factorial(k + 1) for k in range(k_total)] for r in rks], dtype=torch.float64
    )
    a_p = torch.linalg.inv(c[:-1, :-1]).tolist() if k_total > 1 else []
    a_c = torch.linalg.inv(c).tolist()
    return a_p, a_c, _phis(hh, k_total + 1)


class _UniPCStep:
    """One step's coefficients, shared by its predictor and its corrector."""

    def __init__(self, lambdas: list[float], lam_next: float, order: int, variant: str):
        lam0 = lambdas[-1]
        self.h = lam_next - lam0
        self.hh = -self.h  # data prediction integrates "backwards" in the exponent
        self.rks = [(lambdas[-1 - k] - lam0) / self.h for k in range(1, order)] + [1.0]
        self.variant = variant
        if variant == "vary_coeff":
            self.a_p, self.a_c, self.phis = _vary_weights(self.rks, self.hh)
        else:
            self.rhos_p, self.rhos_c, self.b_h = _bh_rhos(self.rks, self.hh, variant)

    def predict(self, x_base, diffs):
        if not diffs:
            return x_base
        if self.variant == "vary_coeff":
            for k in range(len(diffs)):
                x_base = x_base - self.phis[k + 1] * sum(
                    a * d for a, d in zip(self.a_p[k], diffs, strict=True)
                )
            return x_base
        return x_base - self.b_h * sum(r * d for r, d in zip(self.rhos_p, diffs, strict=True))

    def correct(self, x_base, diffs, diff_new):
        if self.variant == "vary_coeff":
            all_diffs = [*diffs, diff_new]
            for k in range(len(all_diffs)):
                x_base = x_base - self.phis[k + 1] * sum(
                    a * d for a, d in zip(self.a_c[k], all_diffs, strict=True)
                )
            return x_base
        residual = sum(r * d for r, d in zip(self.rhos_c[:-1], diffs, strict=True))
        return x_base - self.b_h * (residual + self.rhos_c[-1] * diff_new)


def sample_unipc(denoise, x, sigmas, *, noise, callback=None, options=None, space=VE):
    """UniPC multistep of order `uni_pc_order` (warm-up with lower orders; with `lower_order_final` the
    last steps drop order so few-step runs stay stable), variant bh1 / bh2 / vary_coeff."""
    opts = options or SamplerOptions()
    s = sigmas.tolist()
    n = len(s) - 1
    lambdas: list[float] = []
    outputs: list[torch.Tensor] = []  # x̂₀ at the points in `lambdas`
    model_x = denoise(x, sigmas[0])
    for i in range(n):
        lambdas.append(-math.log(s[i]))
        outputs.append(model_x)
        lambdas, outputs = lambdas[-opts.uni_pc_order :], outputs[-opts.uni_pc_order :]
        m0 = outputs[-1]
        if s[i + 1] == 0:
            x = m0
            report(callback, i, n, x, m0, s[i])
            break
        order = min(opts.uni_pc_order, i + 1)
        if opts.uni_pc_lower_order_final:
            order = min(order, n - i)
        step = _UniPCStep(lambdas, -math.log(s[i + 1]), order, opts.uni_pc_variant)
        diffs = [(outputs[-1 - k] - m0) / step.rks[k - 1] for k in range(1, order)]
        x_base = (s[i + 1] / s[i]) * x - math.expm1(step.hh) * m0
        x = step.predict(x_base, diffs)
        if i + 1 < n:  # the model call at σ_next serves both the corrector and the next step
            model_x = denoise(x, sigmas[i + 1])
            x = step.correct(x_base, diffs, model_x - m0)
        report(callback, i, n, x, m0, s[i])
    return x
