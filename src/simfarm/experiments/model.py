"""Conjugate Bayesian hurdle model per stratum and arm, with partial pooling.

A visitor converts with probability p and, having converted, spends a
log-normal amount with mean m; an arm's value per visitor is ``p * m``
(``p`` alone for the ``conversion_rate`` metric). In every stratum and arm:

- conversion: ``p ~ Beta(kappa * pi, kappa * (1 - pi))`` a priori, updated
  by the stratum's visitors and conversions;
- order value: log spend of converters ``y ~ N(mu, sigma^2)`` with the
  Normal-Inverse-Gamma prior ``mu | sigma^2 ~ N(mu0, sigma^2 / kappa_m)``,
  ``sigma^2 ~ InvGamma(20, 19 * s_w^2)`` (``s_w^2``: pooled within-stratum
  variance); ``m = exp(mu + sigma^2 / 2)``.

**Where strata shrink to.** The prior means ``pi`` and ``mu0`` come from a
main-effects regression fitted on all strata at once (logistic for
conversion, weighted least squares for mean log spend): per arm an
intercept -- the arm's overall rate -- plus covariate effects shared by all
arms plus arm-specific deviations from them, the deviations held near zero
by a ridge prior (effects are assumed alike across covariates until the
data say otherwise). With no covariates this is exactly "shrink toward the
arm's overall rate"; with covariates, a stratum with few visitors borrows
from every stratum sharing its device, channel, ... -- which is what lets
a round of a few thousand visitors see an effect that flips by device.

**How much they shrink.** ``kappa`` and ``kappa_m`` are empirical Bayes:
a method of moments compares the spread of the strata's observed rates
(mean log spends) around the regression with the spread sampling noise
alone would give; little excess spread means strong pooling.

**Uncertainty.** The regression coefficients are uncertain too: every
posterior draw first draws them (normal approximation at the penalised
fit), then the strata given them. Without this the intervals are far too
narrow whenever pooling is strong. Everything is vectorised over
strata x arms x draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from simfarm.experiments.contracts import METRICS
from simfarm.experiments.strata import Strata

__all__ = [
    "ArmStats",
    "ConjugatePosterior",
    "HurdlePosterior",
    "PoolingHyperparameters",
    "arm_stats",
    "bootstrap_stats",
    "conjugate_update",
    "fit_hurdle_posterior",
    "ArmDesign",
    "main_effects_design",
]

#: Prior strength bounds (pseudo-visitors for conversion, pseudo-converters
#: for order value): never infinitely stiff, never vanishing.
KAPPA_BOUNDS = (1.0, 5000.0)
KAPPA_M_BOUNDS = (1.0, 1000.0)
#: Inverse-gamma prior shape for the log-spend variance (its scale makes the
#: prior mean the pooled variance). Worth 40 converters: spend dispersion is
#: much alike across strata, and a weak prior here gives exp(sigma^2 / 2)
#: draws with absurd tails in strata with few converters.
_SIGMA_SHAPE = 20.0
#: Prior standard deviations of the regression coefficients (logit scale for
#: conversion, log scale for spend): arm intercepts around the overall
#: level, and covariate effects shared by all arms. The arm-specific
#: deviations get one prior variance per covariate, estimated by empirical
#: Bayes (MacKay's fixed point under a weak hyperprior) within the bounds below: a covariate that does not
#: modify the effect shrinks its deviations to nothing.
_CONVERSION_PRIOR_SD = (2.0, 1.0)
_SPEND_PRIOR_SD = (1.0, 0.5)
_CONVERSION_DEVIATION_SD = (0.01, 2.0)
_SPEND_DEVIATION_SD = (0.005, 1.0)
#: Scale of the inverse-gamma(0, scale) hyperprior on those variances
#: (prior mode ``scale``: sd about 0.07 on the logit scale, 0.05 on the
#: log scale).
_CONVERSION_HYPER_SCALE = 0.005
_SPEND_HYPER_SCALE = 0.0025
_DEVIATION_START_SD = 0.3
_EM_STEPS = 12
_NEWTON_STEPS = 30
_P_CLIP = (1e-6, 1.0 - 1e-6)


@dataclass(frozen=True, eq=False)
class ArmStats:
    """Sufficient statistics per stratum x arm, arrays ``(..., n_strata, n_arms)``.

    Attributes:
        n: Visitors.
        conversions: Converted visitors.
        sum_log: Sum of log revenue over converters.
        sum_log2: Sum of squared log revenue over converters.
    """

    n: np.ndarray
    conversions: np.ndarray
    sum_log: np.ndarray
    sum_log2: np.ndarray


def arm_stats(
    stratum: np.ndarray,
    arm: np.ndarray,
    converted: np.ndarray,
    revenue: np.ndarray,
    *,
    n_strata: int,
    n_arms: int,
) -> ArmStats:
    """Tally visitors into :class:`ArmStats` (one ``bincount`` per statistic).

    Args:
        stratum: ``(n,)`` stratum index per visitor.
        arm: ``(n,)`` arm index per visitor.
        converted: ``(n,)`` bool.
        revenue: ``(n,)`` revenue (positive for converters).
        n_strata, n_arms: Table shape.

    Raises:
        ValueError: When a converter has non-positive revenue (log undefined).
    """
    converted = np.asarray(converted, dtype=bool)
    cell = np.asarray(stratum, dtype=np.int64) * n_arms + np.asarray(arm, dtype=np.int64)
    size = n_strata * n_arms
    spend = np.asarray(revenue, dtype=np.float64)[converted]
    if spend.size and not (spend > 0).all():
        raise ValueError("every converted visitor needs a revenue > 0 (the model uses log revenue)")
    log_spend = np.log(spend)
    conv_cell = cell[converted]
    shape = (n_strata, n_arms)
    return ArmStats(
        n=np.bincount(cell, minlength=size).astype(np.float64).reshape(shape),
        conversions=np.bincount(conv_cell, minlength=size).astype(np.float64).reshape(shape),
        sum_log=np.bincount(conv_cell, weights=log_spend, minlength=size).reshape(shape),
        sum_log2=np.bincount(conv_cell, weights=log_spend * log_spend, minlength=size).reshape(shape),
    )


def main_effects_design(strata: Strata) -> tuple[np.ndarray, np.ndarray]:
    """Centred one-hot columns, one per level of each covariate (with 2+ levels).

    Every level gets a coefficient (the ridge penalty identifies them) and
    each column is the level indicator minus its share of visitors, so an
    arm's intercept is its average and shrinking the coefficients pulls
    every level's effect symmetrically toward the arm's average effect (a
    dropped reference level would be the point everything shrinks to).

    Returns:
        ``(dummies (n_strata, D), covariate index of each dummy (D,))``.
    """
    pairs = [
        (f, level) for f, cov in enumerate(strata.covariates) if cov.n_levels > 1 for level in range(cov.n_levels)
    ]
    if not pairs:
        return np.zeros((strata.n_strata, 0)), np.zeros(0, dtype=np.int64)
    dummies = np.stack([(strata.levels[:, f] == level).astype(np.float64) for f, level in pairs], axis=1)
    share = strata.counts @ dummies / max(float(strata.counts.sum()), 1.0)
    return dummies - share, np.array([f for f, _ in pairs], dtype=np.int64)


class ArmDesign:
    """The regression design over (stratum, arm) cells, used without building it.

    Coefficients ``theta`` are laid out as: ``K`` arm intercepts, ``D``
    covariate effects shared by all arms, then ``D`` deviations for each
    non-control arm. Cell (s, k) has the linear predictor
    ``a_k + d_s . (shared + deviation_k)``. Products with the design are
    computed per arm on the ``(n_strata, D)`` dummies: a Newton step costs
    O(K * J * D^2) instead of O(K^3 * J * D^2) for the dense design.
    """

    def __init__(self, dummies: np.ndarray, n_arms: int) -> None:
        self.dummies = dummies
        self.n_arms = n_arms
        self.d = dummies.shape[1]
        self.n_coef = n_arms + n_arms * self.d
        self._ones = np.concatenate([np.ones((dummies.shape[0], 1)), dummies], axis=1)  # (J, 1 + D)

    def _slopes(self, theta: np.ndarray) -> np.ndarray:
        """``(..., K, D)``: shared effects plus each arm's deviation."""
        k, d = self.n_arms, self.d
        shared = theta[..., k : k + d]
        deviation = theta[..., k + d :].reshape(*theta.shape[:-1], k - 1, d)
        zero = np.zeros((*theta.shape[:-1], 1, d))
        return shared[..., None, :] + np.concatenate([zero, deviation], axis=-2)

    def predict(self, theta: np.ndarray) -> np.ndarray:
        """Linear predictor ``(..., J, K)`` for coefficients ``(..., P)``."""
        per_arm = np.concatenate([theta[..., : self.n_arms, None], self._slopes(theta)], axis=-1)  # (..., K, 1+D)
        return np.swapaxes(np.matmul(per_arm, self._ones.T), -1, -2)

    def transpose_dot(self, r: np.ndarray) -> np.ndarray:
        """``X' r`` for cell values ``r`` ``(B, J, K)`` -> ``(B, P)``."""
        per_arm = np.matmul(np.swapaxes(r, 1, 2), self._ones)  # (B, K, 1+D)
        shared = per_arm[:, :, 1:].sum(1)
        return np.concatenate([per_arm[:, :, 0], shared, per_arm[:, 1:, 1:].reshape(r.shape[0], -1)], axis=1)

    def _index(self, arm: int) -> np.ndarray:
        k, d = self.n_arms, self.d
        idx = [arm, *range(k, k + d)]
        if arm:
            idx.extend(range(k + d + (arm - 1) * d, k + d + arm * d))
        return np.array(idx)

    def gram(self, w: np.ndarray) -> np.ndarray:
        """``X' diag(w) X`` for cell weights ``(B, J, K)`` -> ``(B, P, P)``."""
        b = w.shape[0]
        out = np.zeros((b, self.n_coef, self.n_coef))
        weighted = np.swapaxes(w, 1, 2)[..., None] * self._ones  # (B, K, J, 1+D)
        blocks = np.matmul(self._ones.T, weighted)  # (B, K, 1+D, 1+D)
        for arm in range(self.n_arms):
            m = blocks[:, arm]
            if arm:  # features [1, d, d]: the dummies appear twice
                top = np.concatenate([m, m[:, :, 1:]], axis=2)
                m = np.concatenate([top, top[:, 1:, :]], axis=1)
            idx = self._index(arm)
            out[:, idx[:, None], idx[None, :]] += m
        return out


def _prior_layout(dummies: np.ndarray, covariate_of_dummy: np.ndarray, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """Column kinds of the joint design: 0 intercept, 1 shared effect, 2 deviation;
    and, for deviations, the covariate they belong to (their variance group)."""
    d = dummies.shape[1]
    kind = np.concatenate([np.zeros(n_arms, int), np.ones(d, int), np.full((n_arms - 1) * d, 2)])
    group = np.concatenate([np.full(n_arms + d, -1), np.tile(covariate_of_dummy, n_arms - 1)])
    return kind, group


def _em_scales(
    coef: np.ndarray,
    cov: np.ndarray,
    group: np.ndarray,
    variances: dict[int, float],
    bounds: tuple[float, float],
    hyper_scale: float,
) -> dict[int, float]:
    """Empirical-Bayes update of each deviation group's prior variance.

    MacKay's fixed point with an inverse-gamma(0, ``hyper_scale``) hyperprior:
    ``var = (|coef_g|^2 + 2 * hyper_scale) / (gamma_g + 2)``, ``gamma_g`` the
    group's effective number of parameters. Without the hyperprior a few
    hundred conversions make noise look like heterogeneity; with it, a
    covariate earns a large variance only when its deviations are well
    determined by the data.
    """
    out = {}
    for g, var in variances.items():
        idx = group == g
        gamma = max(idx.sum() - np.trace(cov[np.ix_(idx, idx)]) / var, 0.0)
        estimate = ((coef[idx] ** 2).sum() + 2.0 * hyper_scale) / (gamma + 2.0)
        out[g] = float(np.clip(estimate, bounds[0] ** 2, bounds[1] ** 2))
    return out


def _precision(kind: np.ndarray, group: np.ndarray, sds: tuple[float, float], variances: dict[int, float]) -> np.ndarray:
    prec = np.where(kind == 0, 1.0 / sds[0] ** 2, 1.0 / sds[1] ** 2)
    for g, var in variances.items():
        prec[group == g] = 1.0 / var
    return prec


def _fit_logistic(
    design: ArmDesign,
    n: np.ndarray,
    c: np.ndarray,
    offset: np.ndarray,
    penalty: np.ndarray,
    start: np.ndarray | None = None,
    max_steps: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    """Penalised logistic regression on binomial counts, batched over the first axis.

    Args:
        design: The (stratum, arm) design.
        n, c: ``(B, J, K)`` trials and successes.
        offset: ``(B,)`` logit offset.
        penalty: ``(P,)`` ridge precisions.
        start: ``(B, P)`` or ``(P,)`` starting coefficients.
        max_steps: Newton steps at most.

    Returns:
        ``(coef (B, P), covariance (B, P, P))`` at the penalised optimum.
    """
    b = n.shape[0]
    coef = np.zeros((b, design.n_coef)) if start is None else np.broadcast_to(start, (b, design.n_coef)).copy()
    lam = np.diag(penalty)
    for _ in range(max_steps):
        prob = 1.0 / (1.0 + np.exp(-(offset[:, None, None] + design.predict(coef))))
        grad = design.transpose_dot(c - n * prob) - coef * penalty
        step = np.linalg.solve(design.gram(n * prob * (1.0 - prob)) + lam, grad[..., None])[..., 0]
        coef = coef + step
        if np.abs(step).max() < 1e-8:
            break
    prob = 1.0 / (1.0 + np.exp(-(offset[:, None, None] + design.predict(coef))))
    return coef, np.linalg.inv(design.gram(n * prob * (1.0 - prob)) + lam)


def _fit_weighted(
    design: ArmDesign, w: np.ndarray, y: np.ndarray, penalty: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge weighted least squares, batched: ``(coef (B, P), inverse normal matrix (B, P, P))``."""
    inv = np.linalg.inv(design.gram(w) + penalty[..., None] * np.eye(design.n_coef))
    coef = np.einsum("bpq,bq->bp", inv, design.transpose_dot(w * y))
    return coef, inv


@dataclass(frozen=True, eq=False)
class PoolingHyperparameters:
    """What empirical Bayes estimated: how much strata and arms are pooled.

    Bootstrap refits reuse these instead of re-estimating them: a resampled
    data set carries about twice the stratum-level noise of the original,
    so re-estimated pooling would be far too weak and the refits would
    chase noise.

    Attributes:
        conversion_scales: Prior variance of the arm-specific conversion
            deviations, per covariate index.
        spend_scales: The same for mean log spend.
        kappa_conversion: ``(n_arms,)`` prior strength of the strata (conversion).
        kappa_order_value: ``(n_arms,)`` prior strength of the strata (log spend).
    """

    conversion_scales: dict[int, float]
    spend_scales: dict[int, float]
    kappa_conversion: np.ndarray
    kappa_order_value: np.ndarray


@dataclass(frozen=True, eq=False)
class ConjugatePosterior:
    """Posterior hyperparameters per stratum x arm, arrays ``(..., n_strata, n_arms)``.

    ``p ~ Beta(alpha, beta)``; ``sigma^2 ~ InvGamma(shape, scale)``;
    ``mu | sigma^2 ~ N(mu, sigma^2 / kappa)``.

    Attributes:
        alpha, beta: Beta parameters of the conversion probability.
        mu, kappa, shape, scale: Normal-Inverse-Gamma parameters of log spend.
        prior_p, prior_mu: The regression's prior means ``pi`` and ``mu0``.
        kappa_conversion, kappa_order_value: ``(..., n_arms)`` prior strengths.
        design: The regression design (:class:`ArmDesign`).
        conversion_offset, spend_offset: ``(...)`` the overall logit rate and
            mean log spend the regressions are centred on.
        conversion_coef, conversion_cov: ``(..., P)``, ``(..., P, P)`` logit
            regression fit and its covariance.
        spend_coef, spend_cov: The same for mean log spend.
        hyper: The pooling hyperparameters used.
    """

    alpha: np.ndarray
    beta: np.ndarray
    mu: np.ndarray
    kappa: np.ndarray
    shape: np.ndarray
    scale: np.ndarray
    prior_p: np.ndarray
    prior_mu: np.ndarray
    kappa_conversion: np.ndarray
    kappa_order_value: np.ndarray
    design: ArmDesign
    conversion_offset: np.ndarray
    conversion_coef: np.ndarray
    conversion_cov: np.ndarray
    spend_offset: np.ndarray
    spend_coef: np.ndarray
    spend_cov: np.ndarray
    hyper: PoolingHyperparameters

    def mean_p(self) -> np.ndarray:
        """Posterior mean of the conversion probability."""
        return self.alpha / (self.alpha + self.beta)

    def mean_m(self) -> np.ndarray:
        """Plug-in posterior mean of the order value.

        ``exp(mu + s2 * (1 + 1/kappa) / 2)`` with ``s2`` the posterior mean of
        sigma^2 (the exact mean is infinite under an inverse-gamma variance).
        """
        s2 = self.scale / (self.shape - 1.0)
        return np.exp(self.mu + 0.5 * s2 * (1.0 + 1.0 / self.kappa))

    def mean_value(self, metric: str) -> np.ndarray:
        """Closed-form posterior mean value per visitor: ``E[p] E[m]`` (or ``E[p]``)."""
        return self.mean_p() if metric == "conversion_rate" else self.mean_p() * self.mean_m()


def _moment_strength(excess: np.ndarray, scale: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    # kappa = scale / excess, where excess is the between-strata variance
    # left after removing sampling noise; no excess -> the upper bound.
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(excess > 0, scale / np.where(excess > 0, excess, 1.0), bounds[1])
    return np.clip(kappa, *bounds)


def conjugate_update(
    stats: ArmStats,
    dummies: np.ndarray,
    covariate_of_dummy: np.ndarray,
    *,
    hyper: PoolingHyperparameters | None = None,
    start: ConjugatePosterior | None = None,
) -> ConjugatePosterior:
    """Empirical-Bayes priors and the conjugate update for every stratum x arm.

    Works on a leading batch dimension (bootstrap replicates) or none.

    Args:
        stats: Sufficient statistics ``(..., n_strata, n_arms)``.
        dummies: ``(n_strata, D)`` covariate columns (:func:`main_effects_design`).
        covariate_of_dummy: ``(D,)`` covariate index of each dummy.
        hyper: Pooling hyperparameters to use as they are; None estimates
            them (empirical Bayes) from *stats*, which must then be unbatched.
        start: A previous fit whose coefficients start the Newton steps.

    Returns:
        The posterior hyperparameters.
    """
    batched = stats.n.ndim == 3
    n, c, sum_log, sum_log2 = (a if batched else a[None] for a in (stats.n, stats.conversions, stats.sum_log, stats.sum_log2))
    b, j, k = n.shape
    design = ArmDesign(dummies, k)
    kind, group = _prior_layout(dummies, covariate_of_dummy, k)
    start_variances = {int(g): _DEVIATION_START_SD**2 for g in np.unique(group[group >= 0])}

    # -- conversion ------------------------------------------------------------
    n_all, c_all = n.sum((1, 2)), c.sum((1, 2))
    p_all = (c_all + 0.5) / (n_all + 1.0)
    offset = np.log(p_all / (1.0 - p_all))
    variances = dict(hyper.conversion_scales) if hyper is not None else start_variances
    coef = None if start is None else start.conversion_coef
    for step in range(1 if hyper is not None else _EM_STEPS + 1):
        penalty = _precision(kind, group, _CONVERSION_PRIOR_SD, variances)
        coef, cov = _fit_logistic(design, n, c, offset, penalty, coef, _NEWTON_STEPS if hyper is None else 8)
        if hyper is None and step < _EM_STEPS:
            variances = _em_scales(coef[0], cov[0], group, variances, _CONVERSION_DEVIATION_SD, _CONVERSION_HYPER_SCALE)
    conversion_variances = variances
    prior_p = np.clip(1.0 / (1.0 + np.exp(-(offset[:, None, None] + design.predict(coef)))), *_P_CLIP)
    seen = n > 0
    rate = np.where(seen, c / np.where(seen, n, 1.0), 0.0)
    v = prior_p * (1.0 - prior_p)
    # E[sum n (rate - prior)^2] = sum v * (n / (kappa + 1) + 1) under the prior.
    spread = (n * (rate - prior_p) ** 2).sum(1) - (v * seen).sum(1)
    kappa_c = np.maximum(_moment_strength(spread, (n * v).sum(1), KAPPA_BOUNDS) - 1.0, KAPPA_BOUNDS[0])
    if hyper is not None:
        kappa_c = np.broadcast_to(hyper.kappa_conversion, kappa_c.shape)
    alpha = kappa_c[:, None, :] * prior_p + c
    beta = kappa_c[:, None, :] * (1.0 - prior_p) + (n - c)

    # -- order value (log spend of converters) --------------------------------
    has = c > 0
    c_safe = np.where(has, c, 1.0)
    ybar = np.where(has, sum_log / c_safe, 0.0)
    ss = np.where(has, np.maximum(sum_log2 - c * ybar * ybar, 0.0), 0.0)
    dof = c.sum((1, 2)) - has.sum((1, 2))
    s2_within = np.maximum(np.where(dof > 0, ss.sum((1, 2)) / np.maximum(dof, 1.0), 1.0), 1e-4)
    mu_all = np.where(c_all > 0, sum_log.sum((1, 2)) / np.maximum(c_all, 1.0), 0.0)
    target = ybar - mu_all[:, None, None]
    variances = dict(hyper.spend_scales) if hyper is not None else start_variances
    for step in range(1 if hyper is not None else _EM_STEPS + 1):
        penalty_m = s2_within[:, None] * _precision(kind, group, _SPEND_PRIOR_SD, variances)[None, :]
        spend_coef, spend_inv = _fit_weighted(design, c, target, penalty_m)
        spend_cov = s2_within[:, None, None] * spend_inv
        if hyper is None and step < _EM_STEPS:
            variances = _em_scales(spend_coef[0], spend_cov[0], group, variances, _SPEND_DEVIATION_SD, _SPEND_HYPER_SCALE)
    prior_mu = mu_all[:, None, None] + design.predict(spend_coef)
    # E[sum c (ybar - mu0)^2] = C * tau^2 + J * s_w^2  ->  tau^2.
    s2 = s2_within[:, None]
    between = (c * (ybar - prior_mu) ** 2 * has).sum(1) - has.sum(1) * s2
    tau2 = between / np.maximum(c.sum(1), 1.0)
    kappa_m = _moment_strength(tau2, np.broadcast_to(s2, tau2.shape), KAPPA_M_BOUNDS)
    if hyper is not None:
        kappa_m = np.broadcast_to(hyper.kappa_order_value, kappa_m.shape)
    km = kappa_m[:, None, :]
    kappa_n = km + c
    mu_n = (km * prior_mu + sum_log) / kappa_n
    shape = _SIGMA_SHAPE + 0.5 * c
    scale = (_SIGMA_SHAPE - 1.0) * s2[:, :, None] + 0.5 * ss + 0.5 * km * c * (ybar - prior_mu) ** 2 / kappa_n

    unbatch = (lambda a: a) if batched else (lambda a: a[0])
    fitted = {
        "alpha": alpha,
        "beta": beta,
        "mu": mu_n,
        "kappa": kappa_n,
        "shape": shape,
        "scale": scale,
        "prior_p": prior_p,
        "prior_mu": prior_mu,
        "kappa_conversion": kappa_c,
        "kappa_order_value": kappa_m,
        "conversion_offset": offset,
        "conversion_coef": coef,
        "conversion_cov": cov,
        "spend_offset": mu_all,
        "spend_coef": spend_coef,
        "spend_cov": spend_cov,
    }
    hyper = PoolingHyperparameters(
        conversion_scales=conversion_variances,
        spend_scales=variances,
        kappa_conversion=unbatch(kappa_c),
        kappa_order_value=unbatch(kappa_m),
    )
    return ConjugatePosterior(design=design, hyper=hyper, **{k: unbatch(v) for k, v in fitted.items()})


def bootstrap_stats(stats: ArmStats, rng: np.random.Generator, n_bootstrap: int) -> ArmStats:
    """Poisson-bootstrap replicates of the sufficient statistics, ``(B, J, K)``.

    Each visitor gets an independent Poisson(1) weight; summed within a
    stratum x arm, converters and non-converters become Poisson counts
    (exact). The converters' mean log spend is redrawn from its normal
    sampling distribution (an approximation: the raw values are not kept).

    Args:
        stats: Sufficient statistics ``(J, K)``.
        rng: Source of the replicates.
        n_bootstrap: Number of replicates B (>= 1).

    Raises:
        ValueError: When *n_bootstrap* is below 1.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    shape = (n_bootstrap, *stats.n.shape)
    conv = rng.poisson(np.broadcast_to(stats.conversions, shape)).astype(np.float64)
    non = rng.poisson(np.broadcast_to(stats.n - stats.conversions, shape)).astype(np.float64)
    c = stats.conversions
    has = c > 0
    ybar = np.where(has, stats.sum_log / np.where(has, c, 1.0), 0.0)
    ss = np.where(has, np.maximum(stats.sum_log2 - c * ybar * ybar, 0.0), 0.0)
    dof = c.sum() - has.sum()
    pooled = ss.sum() / dof if dof > 0 else 1.0
    s2 = np.where(c > 1, ss / np.maximum(c - 1.0, 1.0), pooled)
    mean = ybar + np.sqrt(s2 / np.maximum(conv, 1.0)) * rng.standard_normal(shape)
    mean = np.where(conv > 0, mean, 0.0)
    return ArmStats(
        n=conv + non,
        conversions=conv,
        sum_log=conv * mean,
        sum_log2=np.maximum(conv - 1.0, 0.0) * s2 + conv * mean * mean,
    )


@dataclass(eq=False)
class HurdlePosterior:
    """Posterior draws of p, m and value per stratum x arm.

    Attributes:
        treatments: Arm names, control first (the treatments universe).
        metric: ``revenue_per_visitor`` or ``conversion_rate``.
        strata: The strata the draws are indexed by.
        stats: The sufficient statistics the fit used.
        conjugate: The posterior hyperparameters.
        dummies: ``(n_strata, D)`` covariate columns of the regression.
        covariate_of_dummy: ``(D,)`` covariate index of each column.
        p_draws, m_draws: ``(n_strata, n_arms, n_draws)``.
        value_draws: ``p * m`` draws (``p`` for ``conversion_rate``), derived.
    """

    treatments: list[str]
    metric: str
    strata: Strata
    stats: ArmStats
    conjugate: ConjugatePosterior
    dummies: np.ndarray
    covariate_of_dummy: np.ndarray
    p_draws: np.ndarray
    m_draws: np.ndarray
    value_draws: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.treatments = list(self.treatments)
        self.value_draws = self.p_draws if self.metric == "conversion_rate" else self.p_draws * self.m_draws

    @property
    def n_draws(self) -> int:
        """Number of posterior draws S."""
        return int(self.value_draws.shape[-1])

    @cached_property
    def value_mean(self) -> np.ndarray:
        """``(n_strata, n_arms)`` closed-form posterior mean value (what the tree maximises)."""
        return self.conjugate.mean_value(self.metric)

    @cached_property
    def contrast_mean(self) -> np.ndarray:
        """``(n_strata, n_arms - 1)`` posterior mean effect of each arm over control (from draws)."""
        v = self.value_draws.mean(-1)
        return v[:, 1:] - v[:, :1]

    def contrast_draws(self, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Per-visitor draws of each arm's effect over control, ``(n, S, K-1)``.

        Visitors of a stratum share its draws, so this is an indexing of the
        stratum draws. It allocates ``n * S * (K-1)`` floats: pass *rows* to
        take a subset when the visitors are many (segment averages need no
        per-visitor array: see :meth:`group_value_draws`).

        Args:
            rows: Visitor rows (index array or slice) of the stratified data;
                all visitors when None.
        """
        stratum = self.strata.of_visitor if rows is None else self.strata.of_visitor[rows]
        contrast = self.value_draws[:, 1:, :] - self.value_draws[:, :1, :]
        return np.transpose(contrast[stratum], (0, 2, 1))

    @cached_property
    def overall_value_draws(self) -> np.ndarray:
        """``(n_arms, S)`` draws of each arm's average value per visitor over everyone."""
        return self.group_value_draws(np.zeros(self.strata.n_strata, dtype=np.int64), 1)[0]

    def group_value_draws(self, group_of_stratum: np.ndarray, n_groups: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Visitor-weighted average value draws of groups of strata, ``(G, K, S)``.

        Args:
            group_of_stratum: ``(n_strata,)`` group index of each stratum
                (``-1`` leaves a stratum out).
            n_groups: Number of groups G.
            weights: Visitors per stratum (default: ``strata.counts``).

        Returns:
            Draws of the average value per visitor of each group; NaN for an
            empty group.
        """
        w = self.strata.counts.astype(np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
        member = np.zeros((n_groups, self.strata.n_strata))
        keep = group_of_stratum >= 0
        member[group_of_stratum[keep], np.flatnonzero(keep)] = w[keep]
        total = member.sum(1)
        flat = self.value_draws.reshape(self.strata.n_strata, -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (member @ flat) / total[:, None]
        return out.reshape(n_groups, *self.value_draws.shape[1:])

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: sizes, prior strengths, each arm's mean value."""
        overall = self.overall_value_draws

        def per_arm(values: np.ndarray) -> dict[str, float]:
            return {t: float(v) for t, v in zip(self.treatments, values, strict=True)}

        return {
            "n_strata": self.strata.n_strata,
            "n_draws": self.n_draws,
            "n_visitors": self.strata.n_visitors,
            "metric": self.metric,
            "prior_strength_conversion": per_arm(self.conjugate.kappa_conversion),
            "prior_strength_order_value": per_arm(self.conjugate.kappa_order_value),
            "value_mean": per_arm(overall.mean(-1)),
        }


def _mean_preserving_sigmoid(eta: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``sigmoid(eta + b)`` with ``b`` per row of ``(..., S)`` draws chosen so the
    mean over draws equals *target*.

    Starts from the probit approximation ``E[sigmoid(z)] ~ sigmoid(mean /
    sqrt(1 + pi var / 8))`` and refines with a Newton step.
    """
    centre = np.log(target / (1.0 - target))[..., None]
    spread = eta.var(-1, keepdims=True)
    odds = np.exp(eta - eta.mean(-1, keepdims=True) + centre * np.sqrt(1.0 + np.pi * spread / 8.0))
    for _ in range(2):
        prob = odds / (1.0 + odds)
        slope = np.maximum((prob * (1.0 - prob)).mean(-1, keepdims=True), 1e-12)
        odds = odds * np.exp(-(prob.mean(-1, keepdims=True) - target[..., None]) / slope)
    return odds / (1.0 + odds)


def _coefficient_draws(coef: np.ndarray, cov: np.ndarray, rng: np.random.Generator, n_draws: int) -> np.ndarray:
    """``(S, P)`` normal draws of regression coefficients."""
    chol = np.linalg.cholesky(0.5 * (cov + cov.T) + 1e-12 * np.eye(len(coef)))
    return coef[None, :] + rng.standard_normal((n_draws, len(coef))) @ chol.T


def fit_hurdle_posterior(
    strata: Strata,
    arm: np.ndarray,
    converted: np.ndarray,
    revenue: np.ndarray,
    *,
    treatments: list[str],
    metric: str,
    n_draws: int,
    rng: np.random.Generator,
) -> HurdlePosterior:
    """Fit the hurdle posterior on (cumulative) visitors and draw from it.

    Args:
        strata: Stratification of the visitors (``strata.of_visitor``).
        arm: ``(n,)`` index into *treatments* of the arm each visitor got.
        converted: ``(n,)`` bool.
        revenue: ``(n,)`` revenue.
        treatments: Arm names, control first.
        metric: One of ``METRICS``.
        n_draws: Posterior draws S per stratum x arm (>= 1).
        rng: Source of the draws.

    Returns:
        The posterior; its draws are ``(n_strata, len(treatments), n_draws)``.

    Raises:
        ValueError: On an unknown metric, ``n_draws < 1``, or mismatched lengths.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    if not (len(arm) == len(converted) == len(revenue) == strata.n_visitors):
        raise ValueError("arm, converted, revenue and the strata must cover the same visitors")
    n_arms = len(treatments)
    stats = arm_stats(strata.of_visitor, arm, converted, revenue, n_strata=strata.n_strata, n_arms=n_arms)
    dummies, covariate_of_dummy = main_effects_design(strata)
    post = conjugate_update(stats, dummies, covariate_of_dummy)
    size = (strata.n_strata, n_arms, n_draws)
    design = post.design
    # Each draw: regression coefficients first, then the strata given them.
    # Coefficients are drawn on the logit / log scale; pushed through the
    # sigmoid / exp, symmetric noise would inflate the mean rate and spend
    # of the arms with the least data (a spurious "effect" under the null).
    # So every draw is re-centred to keep the fitted mean on the natural
    # scale, and only the spread is added.
    theta = _coefficient_draws(post.conversion_coef, post.conversion_cov, rng, n_draws)  # (S, P)
    eta = post.conversion_offset + np.moveaxis(design.predict(theta), 0, -1)
    prior_p = np.clip(_mean_preserving_sigmoid(eta, post.prior_p), *_P_CLIP)
    kappa_c = post.kappa_conversion[None, :, None]
    p = rng.beta(
        kappa_c * prior_p + stats.conversions[..., None],
        kappa_c * (1.0 - prior_p) + (stats.n - stats.conversions)[..., None],
    )
    theta_m = _coefficient_draws(post.spend_coef, post.spend_cov, rng, n_draws)
    mu0 = post.spend_offset + np.moveaxis(design.predict(theta_m), 0, -1)
    mu0 = mu0 - 0.5 * mu0.var(axis=-1, keepdims=True)
    prior_weight = (post.kappa_order_value[None, :] / post.kappa)[..., None]
    mu_n = post.mu[..., None] + prior_weight * (mu0 - post.prior_mu[..., None])
    # float32 variates (two to three times faster to draw) are ample here.
    gamma = rng.standard_gamma(post.shape[..., None].astype(np.float32), size=size, dtype=np.float32)
    sigma2 = post.scale[..., None] / gamma
    within = sigma2 / post.kappa[..., None]
    mu = mu_n - 0.5 * within + np.sqrt(within) * rng.standard_normal(size, dtype=np.float32)
    m = np.exp(mu + 0.5 * sigma2)
    return HurdlePosterior(
        treatments=treatments,
        metric=metric,
        strata=strata,
        stats=stats,
        conjugate=post,
        dummies=dummies,
        covariate_of_dummy=covariate_of_dummy,
        p_draws=p,
        m_draws=m,
    )
