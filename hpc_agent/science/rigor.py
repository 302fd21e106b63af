"""Research rigor: a noise floor, a promotion rule, and a verdict for every configuration.

The loudest complaint about autonomous research agents is that they keep "improvements" that
are noise, then build on them. So a challenger becomes the champion only when it beats the
champion by more than the run-to-run noise of the metric, twice:

* **The noise floor** (:func:`noise`) is the pooled standard deviation of the objective over
  every configuration with at least two completed runs: its seeds (``[campaign] seeds`` > 1,
  or, with one seed, generation 0's first configuration run ``[rigor] noise_runs`` times), the
  champion run again with a new seed ("control" trials, while the champion has a single run),
  and the candidates' replicates. Its degrees of freedom (``n``) and how it was obtained go
  with it everywhere it is shown.
* **No verdict on unknown noise.** A configuration better than the champion that finishes
  before the noise is estimated gets no verdict yet (it is *pending*: :func:`waiting` says
  why) and is judged once the noise is known, in the order configurations were planned. The
  first configuration (in plan order) to complete is the reference: it is kept without a
  comparison. A worse one is discarded at once, and a crashed one is a crash. (A campaign
  that turns every measurement of the noise off, :func:`noise_measured`, is judged on the
  candidates' replicates alone.)
* **The promotion rule** (:func:`judge`), ``[rigor] rule``: ``se`` (default) holds a
  challenger whose mean improvement exceeds ``k`` standard errors of the difference
  (``SE = sigma * sqrt(1/n_challenger + 1/n_champion)``, ``k = 2``), ``k`` read as the
  one-sided level it has for a normal law and widened to Student's t quantile of that level
  at the noise's degrees of freedom (a floor from 2 runs is itself uncertain: 4.5 SE at n = 2,
  2.04 SE at n = 60); ``welch`` holds it when Welch's one-sided t-test rejects "no better" at
  level ``alpha``.
* **A keep is confirmed** (``[rigor] replicate``, default on): a challenger that passes the
  rule on its screening runs is a ``candidate``; it is run again (a *replicate*: new seeds,
  same budget, with priority in the next batch or the first freed slots) and kept only if its
  runs together still pass the rule against the champion of that moment *and* its replicate
  alone does (the screening run was selected for being high: the replicate is the unbiased
  one). Otherwise it is discarded, and the reason says which test failed. A metric with no
  run-to-run noise at all (σ = 0: the seeds change nothing) needs no replicate.
* **Verdicts** (:func:`verdicts_due`), journaled: ``keep`` (the new champion), ``discard``
  (worse, within the noise, or not confirmed: the reason says which), ``crash`` (no run
  completed) and ``candidate`` (awaiting its replicate; a second verdict follows). The
  champion the LLM's code lineage, TPE's incumbent and the stop rules ``target`` and
  ``plateau_trials`` follow is the last *kept* configuration.

Everything here is pure: state in, events out.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from hpc_agent.config.spec import CampaignSpec, RigorSection
from hpc_agent.store.events import Verdict, copy_with
from hpc_agent.store.state import CampaignState, ConfigResult, TrialRecord, TrialState

KEEP, DISCARD, CRASH = "keep", "discard", "crash"
CANDIDATE = "candidate"  # passed the rule on its screening runs: kept only if its replicate confirms
PENDING = "pending"  # never journaled: better than the champion, before the noise is known
REPLICATE = "replicate"  # the purpose of a candidate's runs again
VERDICTS = (KEEP, DISCARD, CRASH, CANDIDATE, PENDING)  # as status and the report count them


@dataclass(frozen=True)
class Noise:
    """The run-to-run standard deviation of the objective, its degrees of freedom, and how it
    was obtained ("seeds", "controls", "replicates", joined with "and"; "" when nothing
    estimates it yet)."""

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
    (the search's own runs, the champion's controls and the candidates' replicates;
    confirmation runs, at another budget, are not pooled)."""
    ss, dof, how = 0.0, 0, set()
    for c in configs:
        if c.purpose not in ("", "control") or len(c.values) < 2:
            continue
        mean = sum(c.values) / len(c.values)
        ss += sum((v - mean) ** 2 for v in c.values)
        dof += len(c.values) - 1
        how.add("controls" if c.controlled else "replicates" if c.replicated else "seeds")
    if dof == 0:
        return Noise(None, 0, "")
    return Noise(
        math.sqrt(ss / dof), dof, " and ".join(h for h in ("seeds", "controls", "replicates") if h in how)
    )


@functools.lru_cache(maxsize=256)
def margin(k: float, dof: int) -> float:
    """How many standard errors the ``se`` rule asks for: ``k`` read as the one-sided level it
    has under a normal law (k = 2: 97.7 %), turned into Student's t quantile of that level at
    the noise's ``dof`` degrees of freedom (the noise is estimated, not known: 4.5 at 2 dof,
    2.28 at 10, 2.04 at 60); ``k`` itself with no degrees of freedom to go by."""
    if k <= 0 or dof <= 0:
        return k
    level = statistics.NormalDist().cdf(k)
    lo, hi = k, max(2 * k, 1.0)
    while student_t_cdf(hi, dof) < level:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if student_t_cdf(mid, dof) < level else (lo, mid)
    return hi


def judge(
    challenger: ConfigResult, champion: ConfigResult | None, floor: Noise, rule: RigorSection, mode: str
) -> tuple[str, str, float | None, float | None]:
    """(verdict, reason, improvement, SE) of a finished challenger against the champion, on
    the challenger's runs so far: ``keep`` means it passes the rule (a candidate, where
    replicates are on: :func:`verdicts_due`), ``pending`` that it is better while the noise is
    not known. ``improvement`` is positive when the challenger is better (mean difference,
    signed by ``mode``)."""
    if challenger.objective is None:
        why = (
            challenger.failed_reasons[0].split(": ", 1)[-1]
            if challenger.failed_reasons
            else "no run completed"
        )
        return CRASH, why, None, None
    if champion is None or champion.objective is None:
        return KEEP, "the first configuration to complete (the reference)", None, None
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
        why = f"better than the champion {champion.config_id} by {improvement:.4g}; noise not estimated yet"
        return PENDING, why, improvement, None
    n_c, n_h = max(1, challenger.n_completed), max(1, champion.n_completed)
    se = floor.sigma * math.sqrt(1 / n_c + 1 / n_h)
    if rule.rule == "welch":
        return _welch(challenger, champion, floor, rule.alpha, improvement)
    k = margin(rule.k, floor.n)
    if improvement > k * se:
        return KEEP, f"better by {improvement:.4g} > {k:.3g} SE ({se:.3g})", improvement, se
    return (
        DISCARD,
        f"within the noise: better by {improvement:.4g} <= {k:.3g} SE ({se:.3g})",
        improvement,
        se,
    )


def confirm(
    candidate: ConfigResult,
    replicate: Sequence[float],
    champion: ConfigResult,
    floor: Noise,
    rule: RigorSection,
    mode: str,
) -> tuple[str, str, float | None, float | None]:
    """A candidate's second verdict, once its replicate runs (``replicate``: their completed
    values) have ended: ``keep`` when its runs together, and its replicate alone, both pass
    the rule against ``champion``; else ``discard``, saying which did not."""
    if not replicate:
        return DISCARD, "not confirmed: its replicate did not complete", candidate.improvement, None
    together = judge(candidate, champion, floor, rule, mode)
    alone_result = copy_with(
        candidate,
        values=tuple(replicate),
        n_completed=len(replicate),
        objective=sum(replicate) / len(replicate),
    )
    alone = judge(alone_result, champion, floor, rule, mode)
    runs = f"its {candidate.n_completed} runs together"
    if together[0] == KEEP and alone[0] == KEEP:
        return (
            KEEP,
            f"confirmed: {runs} {together[1]}; its replicate alone {alone[1]}",
            together[2],
            together[3],
        )
    failed, why = (together, runs) if together[0] != KEEP else (alone, "its replicate alone")
    return DISCARD, f"not confirmed ({why}): {failed[1]}", together[2], together[3]


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


def verdicts_due(state: CampaignState, spec: CampaignSpec) -> list[Verdict]:
    """The verdicts due now, in the order configurations were planned: first the candidates
    whose replicates have all ended (confirmed or discarded), then every configuration of the
    search that finished and has no verdict yet, each against the champion of its moment (a
    keep makes it the champion for the next). A configuration better than the champion while
    the noise is unknown gets none yet (pending); so does one that would be the reference
    while a configuration planned before it is still running."""
    out: list[Verdict] = []
    rule, mode = spec.rigor, spec.campaign.mode
    # the kept champion (not the best-mean fallback of a journal without verdicts: a journal of
    # release 0.1.0 resumed is judged from its first configuration on)
    champion = state.config(state.champion_id) if state.champion_id else None
    floor = noise(state.configs_with_values(2))
    for cid in state.candidates:
        c, runs = state.config(cid), replicate_runs(state, cid)
        if c is None or champion is None or not runs or not all(t.state.is_finished() for t in runs):
            continue
        values = [
            float(t.objective) for t in runs if t.state is TrialState.COMPLETED and t.objective is not None
        ]
        verdict, reason, improvement, se = confirm(c, values, champion, floor, rule, mode)
        out.append(_judged(c, verdict, reason, improvement, se, champion, floor))
        champion = c if verdict == KEEP else champion
    done: set[str] = set()
    for c in state.settled_unjudged():
        if champion is None and c.objective is not None and _first_open(state, done) != c.config_id:
            continue  # the reference is the first configuration planned to complete
        verdict, reason, improvement, se = judge(c, champion, floor, rule, mode)
        if verdict == PENDING and not noise_measured(spec):
            verdict, reason = KEEP, f"{reason} (nor measured: {UNMEASURED})"
        if verdict == PENDING:
            continue
        if verdict == KEEP and champion is not None and rule.replicate and _no_noise(floor, champion):
            reason = f"{reason}; no run-to-run noise at all (σ = 0, n = {floor.n}): kept without a replicate"
        elif verdict == KEEP and champion is not None and rule.replicate:
            verdict, reason = CANDIDATE, f"{reason} on its screening run(s): to be confirmed by a replicate"
        out.append(_judged(c, verdict, reason, improvement, se, champion, floor))
        done.add(c.config_id)
        champion = c if verdict == KEEP else champion
    return out


def _no_noise(floor: Noise, champion: ConfigResult) -> bool:
    """The runs repeat the same number (σ = 0 but for floating-point rounding)."""
    scale = max(1.0, abs(champion.objective or 0.0))
    return floor.sigma is not None and floor.sigma <= 1e-9 * scale


UNMEASURED = "one seed, and no noise runs or controls ([rigor] noise_runs, control, a batch too small)"


def noise_measured(spec: CampaignSpec) -> bool:
    """Does the campaign measure the noise (seeds, noise runs or controls)? A campaign that
    turned every measurement off (:data:`UNMEASURED`) judges on the candidates' replicates
    alone, or, with ``replicate = false`` too, keeps any improvement (the rule of 0.1.0)."""
    r, camp = spec.rigor, spec.campaign
    runs = r.noise_runs > 1 and camp.batch_trials >= r.noise_runs + 1  # as plan.noise_seeds
    return len(camp.seeds) > 1 or runs or (r.control and camp.batch_size >= 2)  # as plan.control_trials


def _judged(
    c: ConfigResult,
    verdict: str,
    reason: str,
    improvement: float | None,
    se: float | None,
    champion: ConfigResult | None,
    floor: Noise,
) -> Verdict:
    return Verdict(
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


def _first_open(state: CampaignState, done: set[str]) -> str | None:
    """The first configuration of the search, in plan order, with no verdict (``done``: the
    ones judged in this pass)."""
    return next((cid for cid in state.unjudged_ids() if cid not in done), None)


def replicate_runs(state: CampaignState, config_id: str) -> list[TrialRecord]:
    """A configuration's replicate trials (a candidate run again)."""
    c = state.config(config_id)
    return [state.trials[t] for t in (c.trial_ids if c else ()) if state.trials[t].purpose == REPLICATE]


def waiting(state: CampaignState, spec: CampaignSpec) -> dict[str, tuple[str, str]]:
    """Configuration -> (``pending`` or ``candidate``, why), for every configuration of the
    search that finished and waits for its verdict: a pending one (the noise is not known, or
    it would be the reference while one planned before it still runs) and a candidate
    (awaiting its replicate). What ``status``, the ledger, report.md and the LLM show."""
    out: dict[str, tuple[str, str]] = {}
    champion = state.config(state.champion_id) if state.champion_id else None
    floor = noise(state.configs_with_values(2))
    for c in state.settled_unjudged():
        if champion is None:
            why = "waits for the configurations planned before it (the first to complete is the reference)"
        else:
            why = judge(c, champion, floor, spec.rigor, spec.campaign.mode)[1]
        out[c.config_id] = (PENDING, why)
    for cid in state.candidates:
        runs = replicate_runs(state, cid)
        if not runs:
            where = "its replicate is planned in the next batch"
        else:
            where = f"its replicate {', '.join(f'{t.trial_id} ({t.state.value})' for t in runs)}"
        out[cid] = (CANDIDATE, f"{state.verdicts[cid].get('reason', '')}; {where}")
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
