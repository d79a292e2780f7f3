"""Simulated experiments with known truth: the hurdle data-generating process.

Visitors have five covariates -- ``device_type`` (desktop / mobile /
tablet), ``channel`` (direct / search / social / email), ``is_returning``
(bool), ``session_recency`` (days, exponential, mean 7) and
``browse_depth`` (pages, gamma, mean 4). Under arm k a visitor converts
with probability

    p_k(x) = sigmoid(b(x) + effect_scale * tau_k(x))

and, having converted, spends a log-normal amount with mean

    m_k(x) = m_0(x) * exp(effect_scale * gamma_k(x))    (log-sd ``spend_sigma``).

``b(x)`` is shifted so that the control's average conversion is
``baseline_rate``. A scenario is the choice of ``tau_k`` and ``gamma_k``;
each is defined for any number of arms (K = 2 is a plain A/B test):

- ``null``: no effect anywhere (false-positive and calibration baseline).
- ``constant``: the same lift everywhere; arm 1 is best, later arms weaker.
- ``reversal``: the effect flips sign between desktop and other devices
  (arm 2, when present, mirrors arm 1).
- ``sparse_benefit``: each treatment helps one group of about 10-15% of
  visitors (arm 1: the email channel) and costs a little elsewhere.
- ``clustered``: three latent visitor clusters (never observed; the
  covariates only hint at them) with opposite effects.
- ``many_arms``: made for K = 5 (``control, a, b, c, d``): a small
  constant winner, a mobile-only winner, a clear loser, a returning-visitor
  winner; further arms repeat the patterns.

Round ``r`` draws everything from ``default_rng(SeedSequence((seed, r)))`` in
a fixed order -- covariates, cell and arm uniforms, outcome noise -- so two
plans run with the same seed see the same visitors and the same luck
(common random numbers), whatever the plan assigns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from simfarm.experiments.cells import assign_visitors
from simfarm.experiments.contracts import (
    METRICS,
    CalibrationTruth,
    ObservedExperimentData,
    VariantData,
    propensity_columns,
)
from simfarm.seeding import step_rng

__all__ = ["DEFAULT_TREATMENTS", "SCENARIOS", "ScenarioGenerator", "default_treatments", "make_generator"]

SCENARIOS = ("null", "constant", "reversal", "sparse_benefit", "clustered", "many_arms")

#: Treatments a scenario uses when none are given (the workload's default).
DEFAULT_TREATMENTS: dict[str, tuple[str, ...]] = {"many_arms": ("control", "a", "b", "c", "d")}

DEVICES = ("desktop", "mobile", "tablet")
CHANNELS = ("direct", "search", "social", "email")
COVARIATES = ("device_type", "channel", "is_returning", "session_recency", "browse_depth")

_DEVICE_P = np.array([0.45, 0.45, 0.10])
_CHANNEL_P = np.array([0.30, 0.35, 0.20, 0.15])
_RETURNING_P = 0.35
# Latent clusters of the ``clustered`` scenario and how they show in the covariates.
_CLUSTER_P = np.array([0.35, 0.35, 0.30])
_CLUSTER_DEVICE_P = np.array([[0.15, 0.75, 0.10], [0.75, 0.15, 0.10], [0.45, 0.45, 0.10]])
_CLUSTER_CHANNEL_P = np.array([[0.20, 0.20, 0.45, 0.15], [0.30, 0.50, 0.05, 0.15], [0.30, 0.35, 0.20, 0.15]])
_CLUSTER_RETURNING_P = np.array([0.20, 0.50, 0.35])
_CLUSTER_DEPTH_SHAPE = np.array([3.0, 1.5, 2.0])

# Baseline conversion (logit) and spend (log) by covariate.
_DEVICE_LOGIT = np.array([0.25, -0.15, 0.0])
_CHANNEL_LOGIT = np.array([0.0, 0.10, -0.35, 0.45])
_DEVICE_SPEND = np.array([0.10, -0.10, 0.05])

_CALIBRATION_SEED = 0x5EED_CA11B


def default_treatments(scenario: str) -> tuple[str, ...]:
    """The treatments a scenario uses when none are given."""
    return DEFAULT_TREATMENTS.get(scenario, ("control", "treatment"))


@dataclass(frozen=True, eq=False)
class _Population:
    device: np.ndarray  # codes into DEVICES
    channel: np.ndarray  # codes into CHANNELS
    returning: np.ndarray  # bool
    recency: np.ndarray
    depth: np.ndarray
    cluster: np.ndarray | None  # latent, clustered scenario only

    def __len__(self) -> int:
        return len(self.device)


def _categorical(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """Category codes by inverse CDF; *probs* is ``(k,)`` or per-row ``(n, k)``."""
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(n)
    if cdf.ndim == 1:
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)


def _draw_population(rng: np.random.Generator, n: int, clustered: bool) -> _Population:
    if not clustered:
        return _Population(
            device=_categorical(rng, _DEVICE_P, n),
            channel=_categorical(rng, _CHANNEL_P, n),
            returning=rng.random(n) < _RETURNING_P,
            recency=rng.exponential(7.0, n),
            depth=rng.gamma(2.0, 2.0, n),
            cluster=None,
        )
    cluster = _categorical(rng, _CLUSTER_P, n)
    return _Population(
        device=_categorical(rng, _CLUSTER_DEVICE_P[cluster], n),
        channel=_categorical(rng, _CLUSTER_CHANNEL_P[cluster], n),
        returning=rng.random(n) < _CLUSTER_RETURNING_P[cluster],
        recency=rng.exponential(7.0, n),
        depth=rng.gamma(_CLUSTER_DEPTH_SHAPE[cluster], 2.0),
        cluster=cluster,
    )


def _baseline_logit_shape(pop: _Population) -> np.ndarray:
    """Baseline conversion logit without its intercept."""
    return (
        _DEVICE_LOGIT[pop.device]
        + _CHANNEL_LOGIT[pop.channel]
        + 0.5 * pop.returning
        + 0.12 * (pop.depth - 4.0)
        - 0.03 * (pop.recency - 7.0)
    )


def _log_spend(pop: _Population, mean_order_value: float) -> np.ndarray:
    return np.log(mean_order_value) + _DEVICE_SPEND[pop.device] + 0.04 * (pop.depth - 4.0) + 0.15 * pop.returning


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@lru_cache(maxsize=64)
def _intercept(clustered: bool, baseline_rate: float) -> float:
    """Intercept making the control's mean conversion equal *baseline_rate*.

    Solved once per population by Newton steps on a fixed reference sample,
    so it is the same number in every process.
    """
    rng = np.random.default_rng(np.random.SeedSequence((_CALIBRATION_SEED, int(clustered))))
    shape = _baseline_logit_shape(_draw_population(rng, 200_000, clustered))
    c = float(np.log(baseline_rate / (1.0 - baseline_rate)) - np.median(shape))
    for _ in range(50):
        p = _sigmoid(c + shape)
        gap = float(p.mean()) - baseline_rate
        c -= gap / float((p * (1.0 - p)).mean())
        if abs(gap) < 1e-12:
            break
    return c


# ---------------------------------------------------------------------------
# Effects: tau (logit shift of conversion) and gamma (log shift of spend),
# each (n, K) with a zero control column.
# ---------------------------------------------------------------------------
Effects = Callable[[_Population, int], tuple[np.ndarray, np.ndarray]]


def _columns(pop: _Population, n_arms: int, arm_effect: Callable[[int], tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    tau = np.zeros((len(pop), n_arms))
    gamma = np.zeros((len(pop), n_arms))
    for j in range(1, n_arms):
        tau[:, j], gamma[:, j] = arm_effect(j)
    return tau, gamma


def _null(pop: _Population, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    return _columns(pop, n_arms, lambda j: (0.0, 0.0))


def _constant(pop: _Population, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    def arm(j: int) -> tuple[float, float]:
        strength = (n_arms - j) / (n_arms - 1)  # arm 1 strongest
        return 0.30 * strength, 0.05 * strength

    return _columns(pop, n_arms, arm)


def _reversal(pop: _Population, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    sign = np.where(pop.device == DEVICES.index("desktop"), 1.0, -1.0)

    def arm(j: int) -> tuple[np.ndarray, np.ndarray]:
        size = 0.5 if j <= 2 else 0.25
        direction = sign if j % 2 == 1 else -sign
        return size * direction, 0.2 * size * direction

    return _columns(pop, n_arms, arm)


def _sparse_benefit(pop: _Population, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    groups = (
        pop.channel == CHANNELS.index("email"),  # 15%
        pop.depth > 6.8,  # about 15%
        pop.recency <= 1.1,  # about 15%
        pop.device == DEVICES.index("tablet"),  # 10%
    )

    def arm(j: int) -> tuple[np.ndarray, np.ndarray]:
        benefits = groups[(j - 1) % len(groups)]
        return np.where(benefits, 0.8, -0.1), np.where(benefits, 0.1, -0.02)

    return _columns(pop, n_arms, arm)


_CLUSTER_ROLES = np.array([[0.6, -0.6, 0.0], [-0.6, 0.6, 0.1], [0.3, 0.3, -0.5], [0.0, -0.3, 0.6]])


def _clustered(pop: _Population, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    assert pop.cluster is not None

    def arm(j: int) -> tuple[np.ndarray, np.ndarray]:
        tau = _CLUSTER_ROLES[(j - 1) % len(_CLUSTER_ROLES)][pop.cluster]
        return tau, 0.1 * np.sign(tau)

    return _columns(pop, n_arms, arm)


def _many_arms(pop: _Population, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    mobile = pop.device == DEVICES.index("mobile")
    patterns = (
        lambda: np.full(len(pop), 0.15),  # small constant winner
        lambda: np.where(mobile, 0.45, -0.25),  # mobile-only winner
        lambda: np.full(len(pop), -0.35),  # clear loser
        lambda: np.where(pop.returning, 0.30, -0.05),  # returning visitors
    )

    def arm(j: int) -> tuple[np.ndarray, np.ndarray]:
        tau = patterns[(j - 1) % len(patterns)]()
        return tau, 0.1 * tau

    return _columns(pop, n_arms, arm)


_EFFECTS: dict[str, Effects] = {
    "null": _null,
    "constant": _constant,
    "reversal": _reversal,
    "sparse_benefit": _sparse_benefit,
    "clustered": _clustered,
    "many_arms": _many_arms,
}


class ScenarioGenerator:
    """A sim-mode generator: ``generator(round_idx, plan) -> (observed, truth)``.

    Build it with :func:`make_generator`. It is stateless: round ``r`` depends
    only on ``(seed, r)`` and the plan.

    Attributes:
        scenario, treatments, seed, effect_scale, baseline_rate, metric,
        experiment_id, mean_order_value, spend_sigma: as given to
        :func:`make_generator`.
    """

    def __init__(
        self,
        scenario: str,
        *,
        treatments: Sequence[str],
        seed: int,
        effect_scale: float,
        baseline_rate: float,
        metric: str,
        experiment_id: str,
        mean_order_value: float,
        spend_sigma: float,
    ) -> None:
        self.scenario = scenario
        self.treatments = list(treatments)
        self.seed = int(seed)
        self.effect_scale = float(effect_scale)
        self.baseline_rate = float(baseline_rate)
        self.metric = metric
        self.experiment_id = experiment_id
        self.mean_order_value = float(mean_order_value)
        self.spend_sigma = float(spend_sigma)
        self._clustered = scenario == "clustered"
        self._intercept = _intercept(self._clustered, self.baseline_rate)

    def potential_outcomes(self, rng: np.random.Generator, n: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Draw *n* visitors: their covariate columns, and p and m under every arm.

        Returns:
            ``(covariates, p, m)`` with ``p`` and ``m`` of shape ``(n, K)``.
        """
        pop = _draw_population(rng, n, self._clustered)
        tau, gamma = _EFFECTS[self.scenario](pop, len(self.treatments))
        logit = (self._intercept + _baseline_logit_shape(pop))[:, None] + self.effect_scale * tau
        p = _sigmoid(logit)
        m = np.exp(_log_spend(pop, self.mean_order_value)[:, None] + self.effect_scale * gamma)
        covariates = {
            "device_type": pd.Categorical.from_codes(pop.device, categories=list(DEVICES)),
            "channel": pd.Categorical.from_codes(pop.channel, categories=list(CHANNELS)),
            "is_returning": pop.returning,
            "session_recency": pop.recency,
            "browse_depth": pop.depth,
        }
        return covariates, p, m

    def __call__(self, round_idx: int, plan: Any) -> tuple[ObservedExperimentData, CalibrationTruth]:
        """Simulate round *round_idx* under *plan* (its ``cells`` and ``n_visitors``).

        Raises:
            ValueError: When the plan has no positive ``n_visitors``, its
                cells are invalid, or they name arms outside the treatments.
        """
        n = getattr(plan, "n_visitors", None)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"plan.n_visitors must be a positive integer, got {n!r}")
        rng = step_rng(self.seed, round_idx)
        covariates, p, m = self.potential_outcomes(rng, n)
        u_cell, u_arm, u_convert = rng.random(n), rng.random(n), rng.random(n)
        z_spend = rng.standard_normal(n)
        assignment = assign_visitors(plan.cells, covariates, self.treatments, u_cell, u_arm)
        rows = np.arange(n)
        arm = assignment.arm
        converted = u_convert < p[rows, arm]
        sigma = self.spend_sigma
        spend = np.exp(np.log(m[rows, arm]) - 0.5 * sigma * sigma + sigma * z_spend)
        revenue = np.where(converted, spend, 0.0)

        # Variant-major row order: the truth arrays follow the frames.
        order = np.argsort(arm, kind="stable")
        active = set(getattr(plan, "treatments", None) or self.treatments)
        counts = np.bincount(arm, minlength=len(self.treatments))
        cell_ids = [c.id for c in plan.cells]
        prop_cols = propensity_columns(len(self.treatments))
        prop = assignment.propensity[:, 1:] if len(self.treatments) > 1 else assignment.propensity[:, :0]
        frame = {
            "visitor_id": round_idx * 1_000_000_000 + rows,
            "converted": converted,
            "revenue": revenue,
            **covariates,
            "cell": pd.Categorical.from_codes(assignment.cell, categories=cell_ids),
            **{name: prop[:, i] for i, name in enumerate(prop_cols)},
        }
        table = pd.DataFrame(frame).iloc[order].reset_index(drop=True)
        variants = []
        start = 0
        for k, name in enumerate(self.treatments):
            stop = start + int(counts[k])
            if counts[k] or name in active:
                part = table.iloc[start:stop].reset_index(drop=True)
                part.insert(1, "experiment_id", pd.Categorical.from_codes(np.zeros(len(part), int), [self.experiment_id]))
                part.insert(2, "variant", pd.Categorical.from_codes(np.zeros(len(part), int), [name]))
                variants.append(VariantData.from_visitors(name, part))
            start = stop
        observed = ObservedExperimentData(self.experiment_id, self.metric, variants)
        p_sorted, m_sorted = p[order], m[order]
        value = p_sorted if self.metric == "conversion_rate" else p_sorted * m_sorted
        contrasts = [value[:, k] - value[:, 0] for k in range(1, len(self.treatments))]
        truth = CalibrationTruth(
            effect=float(contrasts[0].mean()) if contrasts else 0.0,
            p_per_visitor=[p_sorted[:, k] for k in range(len(self.treatments))],
            m_per_visitor=[m_sorted[:, k] for k in range(len(self.treatments))],
            contrast_cate_per_visitor=contrasts,
            arms=tuple(self.treatments),
            metric=self.metric,
        )
        return observed, truth


_EXTRA_KEYWORDS = ("metric", "experiment_id", "mean_order_value", "spend_sigma")


def make_generator(
    scenario: str,
    *,
    treatments: Sequence[str],
    seed: int,
    effect_scale: float = 1.0,
    baseline_rate: float = 0.05,
    **kw: Any,
) -> ScenarioGenerator:
    """Build the sim-mode generator of a named scenario.

    Args:
        scenario: One of :data:`SCENARIOS`.
        treatments: Arm names, control first (at least 2, distinct).
        seed: Seed of every round's random stream.
        effect_scale: Multiplies every effect (0 turns any scenario null).
        baseline_rate: The control's average conversion rate, in (0, 1).
        **kw: ``metric`` (default ``revenue_per_visitor``), ``experiment_id``
            (default ``"<scenario>-<seed>"``), ``mean_order_value`` (default
            40.0), ``spend_sigma`` (log-sd of spend, default 0.8).

    Returns:
        The :class:`ScenarioGenerator`.

    Raises:
        ValueError: On an unknown scenario or keyword, or an invalid value.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
    unknown = sorted(set(kw) - set(_EXTRA_KEYWORDS))
    if unknown:
        raise ValueError(f"make_generator got unknown keyword(s) {unknown}; allowed: {', '.join(_EXTRA_KEYWORDS)}")
    treatments = list(treatments)
    if len(treatments) < 2 or len(set(treatments)) != len(treatments) or not all(
        isinstance(t, str) and t for t in treatments
    ):
        raise ValueError(f"treatments must be at least 2 distinct non-empty names, control first, got {treatments}")
    if not 0.0 < baseline_rate < 1.0:
        raise ValueError(f"baseline_rate must be in (0, 1), got {baseline_rate!r}")
    if not np.isfinite(effect_scale) or effect_scale < 0:
        raise ValueError(f"effect_scale must be a finite number >= 0, got {effect_scale!r}")
    metric = kw.get("metric", "revenue_per_visitor")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    mean_order_value = float(kw.get("mean_order_value", 40.0))
    spend_sigma = float(kw.get("spend_sigma", 0.8))
    if not mean_order_value > 0 or not spend_sigma > 0:
        raise ValueError(f"mean_order_value and spend_sigma must be > 0, got {mean_order_value}, {spend_sigma}")
    return ScenarioGenerator(
        scenario,
        treatments=treatments,
        seed=seed,
        effect_scale=effect_scale,
        baseline_rate=float(baseline_rate),
        metric=metric,
        experiment_id=str(kw.get("experiment_id", f"{scenario}-{seed}")),
        mean_order_value=mean_order_value,
        spend_sigma=spend_sigma,
    )
