"""What a reply must be, and the check of it.

A reply is declared once (:class:`PlanReply`, :class:`ProposalReply`, :class:`AnalysisReply`,
with :mod:`hpc_agent.config.schema`, the edits with :mod:`hpc_agent.edits.patches`).
:func:`reply_schema` is the JSON schema sent with ``response_format``, generated from those
declarations with what the campaign decides filled in (the search space's parameters, the
editable files, the edit forms asked for), in the strict subset every server that takes a
schema takes. :class:`Batch` reads each proposal through the same declaration, then checks
it exactly as the campaign would (:meth:`Space.validate`, duplicates of past, in-flight and
same-batch configurations, the patch applied to the champion's files and compiled:
:func:`~hpc_agent.planners.llm.edits.read_patch`) and keeps the valid ones, round after round
of repair.

The check reads more than the schema asks for, on purpose: a reply without its envelope (a
bare list, or one proposal), a proposal without its patch (or, where there is no search space,
its parameters), keys it does not know (read past), a patch as one unified diff or one edit
without its list. Models that are not decoding under the schema write these, and reading them
costs less than a repair round.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from hpc_agent.config.schema import Check, Section, Words, json_schema, validated
from hpc_agent.config.spec import CampaignSpec
from hpc_agent.edits.patches import Edit
from hpc_agent.errors import UserError
from hpc_agent.planners.base import Proposal, config_key
from hpc_agent.planners.llm.edits import edit_schema, read_patch, whole_file_tokens
from hpc_agent.planners.llm.prompt import (
    View,
    champion_files,
    is_placeholder,
    lineage_parent,
    params_json,
    short,
)

REPLY_TOKENS_ANALYSIS = 800  # the analysis: a few short paragraphs of markdown
REPLY_TOKENS_PROPOSAL = 150  # a proposal's hypothesis and parameters
REPLY_TOKENS_PATCH = 350  # a proposal's patch, where files are editable


def _read_later(patch: Any, info: Any) -> Any:
    """A proposal's patch as written: :func:`read_patch` reads it against the champion's files."""
    return patch


@dataclass(frozen=True)
class ProposalReply(Section):
    """One experiment as a reply proposes it: why, the parameters, the code change. Keys it does
    not declare are read past; ``params`` and ``patch`` are filled in by the campaign's
    schema (:func:`reply_schema`)."""

    unknown_keys: ClassVar[str] = "ignore"
    hypothesis: str
    params: Annotated[
        Mapping[str, Any] | None, Words(expects="an object with every parameter of the search space")
    ] = None
    patch: Annotated[tuple[Edit, ...] | None, Check(_read_later, plain=True)] = None


@dataclass(frozen=True)
class PlanReply(Section):
    """A reply that plans: the analysis of the last generation, the proposals for the next."""

    analysis: str
    proposals: tuple[ProposalReply, ...]


@dataclass(frozen=True)
class AnalysisReply(Section):
    """The last generation's reply: its analysis, nothing more to run."""

    analysis: str


@dataclass
class Batch:
    """The proposals of one generation as they are accepted, round after round."""

    view: View
    accepted: list[Proposal] = field(default_factory=list)
    dropped: int = 0  # invalid proposals given up on (their errors are in the log's last round)
    last_errors: list[str] = field(default_factory=list)  # to send back (empty: nothing to repair)
    round_errors: list[str] = field(default_factory=list)  # everything wrong with the last reply
    round_invalid: int = 0  # proposals of the last reply that were invalid
    last_raw: int = 0
    files: dict[str, str] = field(init=False)  # the champion's editable files
    parent: str | None = field(init=False)  # where proposals without a patch run
    _taken: dict[str, str] = field(default_factory=dict)  # key -> who has it

    def __post_init__(self) -> None:
        for c in self.view.history:
            what = "is in flight" if c.pending else "already ran"
            self._taken.setdefault(config_key(c.params, c.patch, c.parent), f"{what} (config {c.config_id})")
        for k in self.view.extra_seen:
            self._taken.setdefault(k, "is already in this batch (the baseline)")
        self.files = champion_files(self.view)
        self.parent = lineage_parent(self.view.champion)

    @property
    def missing(self) -> int:
        """Proposals still wanted."""
        return max(0, self.view.n - len(self.accepted))

    def keys(self) -> set[str]:
        """The config keys of the accepted proposals."""
        return {config_key(p.params, p.patch, p.parent) for p in self.accepted}

    def take(self, data: Any) -> list[str]:
        """Accept the valid proposals of a reply (up to the number still missing); return the
        errors to send back (empty: nothing to repair)."""
        want = self.missing
        raw = proposals_of(data)
        self.round_invalid = 0
        if raw is None:
            self.last_errors = self.round_errors = [
                'the reply has no "proposals" list; reply with {"analysis": "...", "proposals": [...]}'
            ]
            self.last_raw = 0
            return self.last_errors
        self.last_raw = len(raw)
        errors: list[str] = []
        taken_now = 0
        for i, item in enumerate(raw, 1):
            if taken_now >= want:
                break
            p, errs = self._check(item, i)
            if errs:
                errors.extend(errs)
                self.round_invalid += 1
                continue
            assert p is not None
            self.accepted.append(p)
            self._taken[config_key(p.params, p.patch, p.parent)] = f"duplicates proposal {i} of your reply"
            taken_now += 1
        still = want - taken_now
        if still > 0 and len(raw) < want:
            errors.append(f"you proposed {len(raw)} experiment(s); {want} were asked for")
        if not errors and still > 0:
            errors.append(f"{still} more proposal(s) are needed")
        self.round_errors = errors  # logged even when the batch is full (nothing to repair)
        self.last_errors = errors if still > 0 else []
        return self.last_errors

    def unreadable(self, why: str) -> list[str]:
        """The reply could not be read: ``why`` is the one error to send back."""
        self.last_errors = self.round_errors = [why]
        self.round_invalid = self.last_raw = 0
        return self.last_errors

    def _check(self, item: Any, i: int) -> tuple[Proposal | None, list[str]]:
        """Proposal ``i`` of a reply, read (:meth:`_read`) and checked as the campaign would
        check it: in the space, a patch that applies and compiles, not a duplicate."""
        where = f"proposal {i}"
        if isinstance(item, Mapping) and isinstance(item.get("hypothesis"), str):
            said = item["hypothesis"].strip()
            where += "" if is_placeholder(said) else f" ({short(said, 60)!r})"  # in the model's words
        reply, why = self._read(item, where)
        if reply is None:
            return None, [f"{where}{why}"]
        params, errors = self.view.spec.space.validate(reply.params or {})
        errs = [f"{where}: {e}" for e in errors]
        patch, patch_errors = self._patch(reply.patch)
        errs += [f"{where}: patch: {e}" for e in patch_errors]
        if errs:
            return None, errs
        champ = self.view.champion
        parent = self.parent if patch is None else (champ.config_id if champ else None)
        who = self._taken.get(config_key(params, patch, parent))
        if who:
            return None, [
                f"{where}: {params_json(params)}{' with this patch' if patch else ''} {who}; "
                "propose something new"
            ]
        return Proposal(params, reply.hypothesis.strip(), patch, parent, "llm"), []

    def _read(self, item: Any, where: str) -> tuple[ProposalReply | None, str]:
        """A proposal read through its declaration: (it, "") or (None, what is wrong, to
        follow ``where``)."""
        if not isinstance(item, Mapping):
            return None, f": expected an object with hypothesis, params, patch; got {short(repr(item), 80)}"
        try:
            reply = validated(ProposalReply, item, where, sep=": ")
        except UserError as e:
            return None, e.message[len(where) :]
        code_first = self.view.spec.code_first
        if is_placeholder(reply.hypothesis):
            return None, (
                f': "hypothesis" is {reply.hypothesis.strip()!r}, the placeholder of the reply format; '
                "write the hypothesis itself: what you change, what you expect, and why"
            )
        if code_first and reply.patch in (None, (), "", {}):  # no search space: a proposal is its patch
            return None, (
                ': "patch" is missing; this campaign has no search space, so every experiment is a code '
                "change: give a list of edits of the editable files"
            )
        if reply.params is None and not code_first:
            return None, ': "params" must be an object with every parameter of the search space'
        return reply, ""

    def _patch(self, raw: Any) -> tuple[tuple[Mapping[str, Any], ...] | None, list[str]]:
        return read_patch(raw, self.files, self.view.spec.experiment.editable)

    def give_up(self) -> None:
        """Repairs are spent: the last reply's invalid proposals are dropped (TPE fills in)."""
        self.dropped = self.round_invalid

    def record(self) -> dict[str, Any]:
        """What the log keeps of this round."""
        errors = self.round_errors
        return {
            "proposals": [
                {
                    "params": dict(p.params),
                    "hypothesis": p.hypothesis,
                    "patch": list(p.patch or []) or None,
                    "parent": p.parent,
                }
                for p in self.accepted
            ],
            "raw_proposals": self.last_raw,
            "validation_errors": list(errors) or None,
        }


def proposals_of(data: Any) -> list[Any] | None:
    """The proposals list a reply carries (a bare list, ``{"proposals": [...]}``, or a single
    proposal without the envelope); None when it has none."""
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        p = data.get("proposals")
        if isinstance(p, list):
            return p
        if isinstance(data.get("params"), Mapping):
            return [data]  # a single proposal, without the envelope
    return None


def reply_schema(spec: CampaignSpec, with_proposals: bool = True, n: int | None = None) -> dict[str, Any]:
    """The JSON schema of a reply (:class:`PlanReply`; :class:`AnalysisReply` when no
    proposals are asked for), with the campaign's parameters and edits filled in. Ranges are in
    descriptions, not keywords, so every server that takes a schema takes it; ``n`` adds
    ``minItems``/``maxItems`` to the proposals, which a server decoding under the schema
    (llama.cpp) then honours (the client leaves them out of a strict ``json_schema`` request)."""
    if not with_proposals:  # the last generation's analysis: nothing more will run
        return json_schema(AnalysisReply)
    patch = edit_schema(spec.experiment.editable, spec.planner.edit_format)
    if spec.code_first and spec.experiment.editable:  # no search space: every proposal is a code change
        patch = {**patch["anyOf"][0], "minItems": 1}
    schema = json_schema(
        PlanReply, fill={"proposals.params": spec.space.json_schema(), "proposals.patch": patch}
    )
    if n:
        schema["properties"]["proposals"].update(minItems=n, maxItems=n)
    return schema


def reply_tokens(spec: CampaignSpec, n: int) -> int:
    """The room a reply with an analysis and ``n`` proposals needs (its ``max_tokens``), unless
    ``[planner] max_tokens`` fixes it: generous for a good model's reply, and bounded, so that
    a model that rambles stops and an abandoned request ends."""
    if spec.planner.max_tokens:
        return spec.planner.max_tokens
    exp = spec.experiment
    per = REPLY_TOKENS_PROPOSAL + (REPLY_TOKENS_PATCH if exp.editable else 0)
    per += whole_file_tokens(exp.workdir, exp.editable, spec.planner.edit_format)
    return REPLY_TOKENS_ANALYSIS + n * per
