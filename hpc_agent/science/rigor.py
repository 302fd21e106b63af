"""Research rigor: a noise floor, a promotion rule, and a verdict for every configuration.

The loudest complaint about autonomous research agents is that they keep "improvements" that
are noise. So a challenger becomes the champion only when it beats the champion by more than
the run-to-run noise of the metric:

* **The noise floor** (:func:`noise`) is the pooled standard deviation of the objective over
  every configuration with at least two completed runs: its seeds (``[campaign] seeds`` > 1),
  or, with one seed, the champion run again with a new seed ("control" trials, added to a
  generation whenever the champion has a single run). Its degrees of freedom (``n``) and
  how it was obtained go with it everywhere it is shown.
* **The promotion rule** (:func:`judge`), ``[rigor] rule``: ``se`` (default) keeps a
  challenger whose mean improvement exceeds ``k`` standard errors of the difference
  (``SE = sigma * sqrt(1/n_challenger + 1/n_champion)``, ``k = 2``); ``welch`` keeps it when
  Welch's one-sided t-test rejects "no better" at level ``alpha`` (each side's own variance
  where it has replicates, the pooled one otherwise). Before any noise estimate exists, any
  improvement is kept, and the verdict says the noise was not yet known.
* **Verdicts** (:func:`verdicts_due`): every finished configuration of the campaign's search
  gets one, in the journal: ``keep`` (the new champion), ``discard`` (worse, or better but
  within the noise: the reason says which) or ``crash`` (no run completed). The champion the
  LLM's code lineage follows is the last kept configuration.

Everything here is pure: state in, events out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hpc_agent.config.spec import CampaignSpec, RigorSection
from hpc_agent.store.events import Judged
from hpc_agent.store.state import CampaignState, ConfigResult

KEEP, DISCARD, CRASH = "keep", "discard", "crash"


@dataclass(frozen=True)
class Noise:
    """The run-to-run standard deviation of the objective, its degrees of freedom, and how it
    was obtained ("seeds", "controls", or "" when nothing estimates it yet)."""

    sigma: float | None
    n: int
    how: str

    def describe(self) -> str:
        """ "σ = 0.012 (n = 7, from seeds)", or why there is none yet."""
        if self.sigma is None:
            return "not estimated yet (no configuration has two completed runs)"
        return f"σ = {self.sigma:.4g} (n = {self.n}, from {self.how})"


def noise(configs: Sequence[ConfigResult]) -> Noise:
    """The pooled standard deviation over configurations with two or more completed values
    (the search's own runs and the champion's controls; confirmation runs, at another budget,
    are not pooled)."""
    ss, dof, controls = 0.0, 0, False
    for c in configs:
        if c.purpose not in ("", "control") or len(c.values) < 2:
            continue
        mean = sum(c.values) / len(c.values)
        ss += sum((v - mean) ** 2 for v in c.values)
        dof += len(c.values) - 1
        controls = controls or c.controlled
    if dof == 0:
        return Noise(None, 0, "")
    return Noise(math.sqrt(ss / dof), dof, "controls" if controls else "seeds")


def judge(
    challenger: ConfigResult, champion: ConfigResult | None, floor: Noise, rule: RigorSection, mode: str
) -> tuple[str, str, float | None, float | None]:
    """(verdict, reason, improvement, SE) of a finished challenger against the champion.
    ``improvement`` is positive when the challenger is better (mean difference, signed by
    ``mode``)."""
    if challenger.objective is None:
        why = (
            challenger.failed_reasons[0].split(": ", 1)[-1]
            if challenger.failed_reasons
            else "no run completed"
        )
        return CRASH, why, None, None
    if champion is None or champion.objective is None:
        return KEEP, "the first configuration to complete", None, None
    sign = 1.0 if mode == "min" else -1.0
    improvement = sign * (champion.objective - challenger.objective)
    if improvement <= 0:
        return (
            DISCARD,
            f"worse than the champion {champion.config_id} by {-improvement:.4g}",
            improvement,
            None,
        )
    if floor.sigma is None:
        return KEEP, "better (the noise is not estimated yet)", improvement, None
    n_c, n_h = max(1, challenger.n_completed), max(1, champion.n_completed)
    se = floor.sigma * math.sqrt(1 / n_c + 1 / n_h)
    if rule.rule == "welch":
        return _welch(challenger, champion, floor, rule.alpha, improvement)
    if improvement > rule.k * se:
        return KEEP, f"better by {improvement:.4g} > {rule.k:g} SE ({se:.3g})", improvement, se
    return (
        DISCARD,
        f"within the noise: better by {improvement:.4g} <= {rule.k:g} SE ({se:.3g})",
        improvement,
        se,
    )


def _welch(
    a: ConfigResult, b: ConfigResult, floor: Noise, alpha: float, improvement: float
) -> tuple[str, str, float | None, float | None]:
    sigma = floor.sigma or 0.0
    va = _variance(a.values) if len(a.values) > 1 else sigma**2
    vb = _variance(b.values) if len(b.values) > 1 else sigma**2
    na, nb = max(1, a.n_completed), max(1, b.n_completed)
    se = math.sqrt(va / na + vb / nb)
    if se == 0:
        return KEEP, "better, with no variance at all", improvement, 0.0
    dof_a = na - 1 if len(a.values) > 1 else floor.n
    dof_b = nb - 1 if len(b.values) > 1 else floor.n
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / max(1, dof_a) + (vb / nb) ** 2 / max(1, dof_b))
    p = 1.0 - student_t_cdf(improvement / se, df)
    if p < alpha:
        return KEEP, f"better by {improvement:.4g} (Welch p = {p:.3g} < {alpha:g})", improvement, se
    return (
        DISCARD,
        f"within the noise: better by {improvement:.4g} (Welch p = {p:.3g} >= {alpha:g})",
        improvement,
        se,
    )


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (no SciPy: the regularized
    incomplete beta function, by Lentz's continued fraction)."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = tiny if abs(d) < tiny else d
        d = 1.0 / d
        c = 1.0 + num / c
        c = tiny if abs(c) < tiny else c
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return front * (f - 1.0) / a


def verdicts_due(state: CampaignState, spec: CampaignSpec) -> list[Judged]:
    """A verdict for every configuration of the search that finished and has none yet, in
    the order they were planned, each judged against the champion of its moment (a keep
    makes it the champion for the next)."""
    out: list[Judged] = []
    due = [c for c in state.settled_unjudged() if not c.verdict]
    if not due:
        return out
    # the kept champion (not the best-mean fallback of a journal without verdicts: a journal of
    # release 0.1.0 resumed is judged from its first configuration on)
    champion = state.config(state.champion_id) if state.champion_id else None
    floor = noise(state.configs_with_values(2))
    for c in due:
        verdict, reason, improvement, se = judge(c, champion, floor, spec.rigor, spec.campaign.mode)
        out.append(
            Judged(
                config=c.config_id,
                verdict=verdict,
                reason=reason,
                improvement=improvement,
                se=se,
                champion=champion.config_id if champion else None,
                noise_sigma=floor.sigma,
                noise_n=floor.n,
                noise_from=floor.how,
            )
        )
        if verdict == KEEP:
            champion = c
    return out


def confirmations(state: CampaignState) -> dict[str, ConfigResult]:
    """Original configuration -> its confirmation (the latest, if confirmed more than once)."""
    return {c.of: c for c in state.configs() if c.purpose == "confirm" and c.of}


def final_champion(state: CampaignState, mode: str) -> tuple[ConfigResult | None, ConfigResult | None]:
    """The campaign's answer: (configuration, its confirmation). With confirmed results, the
    best confirmed configuration (its confirmation's mean decides); without, the kept
    champion and None."""
    confirmed = {k: c for k, c in confirmations(state).items() if c.objective is not None and not c.pending}
    if not confirmed:
        return state.champion(mode), None
    sign = 1.0 if mode == "min" else -1.0
    original, conf = min(confirmed.items(), key=lambda kv: (sign * float(kv[1].objective or 0.0), kv[0]))
    by_id = {c.config_id: c for c in state.configs()}
    return by_id.get(original), conf
