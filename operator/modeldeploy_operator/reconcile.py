"""One reconcile of one ModelDeployment: validate, render, apply what differs, observe the rollout,
decide (known good / roll back), write status if it changed. Create, update, resume, the timer and
child events all end here.

It is one module, over the usual size, so that one reconcile reads top to bottom: the order of its
reads, applies, rollback and status write is the point, and every decision in it is a pure function
elsewhere (validation, render, surge, bake, rollback, status).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import pydantic
from kubernetes.client.exceptions import ApiException

from . import api, bake, metrics, naming, surge, watch
from .drift import with_spec_hash
from .fieldmap import refusal_problems
from .kube import Kube, Refused, now_rfc3339
from .observe import ABSENT, observe_rollout, replicaset_template
from .preflight import check_model_source
from .render import Child, Settings, Target, render_children, render_deployment, render_pod_template
from .rollback import Action, Decision, Verdict, assess_rollout, decide_rollback, follow_revisions, is_pinned
from .status import Observed, compute_status, events_for, status_patch, status_to_dict
from .validation import Problem, check_auth_secret, validate_spec
from .watched import Watched

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    status_written: bool
    decision: Decision | None


def parse_spec(raw: dict[str, Any]) -> tuple[api.ModelDeploymentSpec | None, list[Problem]]:
    try:
        return api.ModelDeploymentSpec.model_validate(raw), []
    except pydantic.ValidationError as exc:
        return None, [Problem(".".join(str(p) for p in ("spec", *e["loc"])), e["msg"]) for e in exc.errors()]


def parse_status(raw: dict[str, Any] | None) -> api.ModelDeploymentStatus:
    try:
        return api.ModelDeploymentStatus.model_validate(raw or {})
    except pydantic.ValidationError:
        log.warning("ignoring an unreadable status: %s", raw)
        return api.ModelDeploymentStatus()


def reconcile(
    kube: Kube,
    settings: Settings,
    watched: Watched,
    namespace: str,
    name: str,
    traffic: watch.TrafficWatch | None = None,
) -> Result | None:
    """One reconcile of one resource. `traffic`: the post-rollout analysis' watch of pods' metrics
    (none: nothing is scraped, and a bake never ends)."""
    started = time.perf_counter()
    try:
        result = _reconcile(kube, settings, watched, namespace, name, traffic)
        metrics.RECONCILES.labels(result="ok").inc()
        return result
    except ApiException as exc:
        if exc.status == 403 and "NamespaceTerminating" in (exc.body or ""):
            log.debug("%s/%s: namespace is being deleted; nothing to reconcile", namespace, name)
            return None
        metrics.RECONCILES.labels(result="error").inc()
        raise
    except Exception:
        metrics.RECONCILES.labels(result="error").inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)


def _validate(
    kube: Kube, namespace: str, name: str, raw_spec: dict[str, Any]
) -> tuple[api.ModelDeploymentSpec | None, list[Problem], str | None]:
    spec, problems = parse_spec(raw_spec)
    note = None
    if spec is not None:
        problems += validate_spec(spec, name)
        if spec.auth is not None and not problems:
            problems += check_auth_secret(spec.auth, kube.get("v1", "Secret", namespace, spec.auth.secret_name))
        if not problems:  # the store is asked only about a spec that is otherwise sound
            outcome = check_model_source(kube, namespace, name, spec)
            problems += outcome.problems
            note = outcome.note
    return spec, problems, note


def _reconcile(
    kube: Kube, settings: Settings, watched: Watched, namespace: str, name: str, traffic: watch.TrafficWatch | None
) -> Result | None:
    # From the watch cache, or our own last status write where the cache has not seen it yet.
    body = watched.model_deployment(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        if traffic is not None:
            traffic.forget((namespace, name))
        return None
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    retry_token = (meta.get("annotations") or {}).get(naming.RETRY_ANNOTATION)
    previous = parse_status(body.get("status"))
    spec, problems, note = _validate(kube, namespace, name, body.get("spec") or {})
    if note is not None:  # what the pre-flight check could not see, once per source that passed
        kube.emit_event(body, "Normal", "ModelSourcePartlyChecked", note)
    # A name longer than a label value can be labels nothing (and cannot be selected on).
    labelled = len(name) <= naming.LABEL_VALUE_MAX
    replicasets = watched.owned("ReplicaSet", namespace, name) if labelled else []
    pods = watched.owned("Pod", namespace, name) if labelled else []
    crash_loop_restarts = (spec.rollout if spec is not None else api.Rollout()).crash_loop_restarts
    observed = Observed(
        name=name,
        namespace=namespace,
        generation=generation,
        model_name=(spec.model.name if spec is not None else None) or name,
        state=ABSENT,
        assessment=assess_rollout(ABSENT, crash_loop_restarts),
        problems=tuple(problems),
        known_good=previous.last_known_good,
        record=previous.rollback,
        rollback_count=previous.rollback_count,
        pinned=is_pinned(previous.rollback, generation, retry_token),
        analysis=previous.analysis,
        hardware=previous.hardware,
    )

    if spec is None or problems:
        # A spec that cannot work changes nothing that is serving: children are left as they are.
        deployment = watched.get("Deployment", namespace, name)
        return Result(
            _write_refusal(kube, watched, body, observed, deployment, replicasets, pods, crash_loop_restarts), None
        )

    target = Target(name, namespace, meta["uid"], spec)
    deployment, template, plan, refused = _sync_children(kube, settings, watched, target, observed, replicasets)
    if refused:
        observed = replace(observed, problems=refused)
        return Result(
            _write_refusal(kube, watched, body, observed, deployment, replicasets, pods, crash_loop_restarts), None
        )
    template_hash = naming.content_hash(template)
    state = observe_rollout(deployment, replicasets, pods)
    assessment = assess_rollout(state, crash_loop_restarts)
    known_good, record = follow_revisions(observed.known_good, observed.record, state, replicasets)
    bake_plan = _plan_analysis(
        spec, state, assessment, template_hash, known_good, observed.pinned, previous, namespace, name, traffic
    )
    assessment = bake_plan.failed or assessment
    observed = replace(
        observed,
        state=state,
        assessment=assessment,
        known_good=known_good,
        record=record,
        update_cost=_update_cost(kube, spec, template, deployment, plan, assessment.verdict),
        analysis=bake_plan.analysis,
        hardware=bake_plan.hardware,
    )

    known_template = _known_good_template(replicasets, observed.known_good)
    decision = decide_rollback(
        assessment,
        generation=generation,
        template_hash=template_hash,
        auto_rollback=spec.rollout.auto_rollback,
        known_good=observed.known_good,
        record=observed.record,
        pinned=observed.pinned,
        retry_token=retry_token,
        restorable=known_template is not None,
        analysis_pending=bake_plan.hold,
    )
    restore = known_template if decision.action == Action.ROLL_BACK else None
    observed = record_decision(observed, decision, template_hash, retry_token, now_rfc3339())
    if restore is not None:
        observed = _roll_back(kube, settings, watched, body, target, observed, restore)
    if traffic is not None:
        traffic.track((namespace, name), None if restore is not None else bake_plan.track)
    return Result(_write_status(kube, watched, body, observed), decision)


def _plan_analysis(
    spec: api.ModelDeploymentSpec,
    state: Any,
    assessment: Any,
    template_hash: str,
    known_good: api.KnownGood | None,
    pinned: bool,
    previous: api.ModelDeploymentStatus,
    namespace: str,
    name: str,
    traffic: watch.TrafficWatch | None,
) -> bake.Plan:
    """The analysis' part of this reconcile, with what the traffic watch has learnt so far."""
    live = bake.Live()
    w, key, h = traffic, (namespace, name), state.pod_template_hash or ""
    if w is not None:
        prev = previous.analysis
        started = bake.epoch(prev.start_time) if prev is not None and prev.pod_template_hash == h else None
        live = bake.Live(
            decision=w.decision(key, h, started) if started is not None else None,
            baseline=w.baseline(key, known_good.pod_template_hash, spec.rollout.analysis.min_requests)
            if known_good is not None
            else None,
            facts=w.facts(key, h),
        )
    return bake.plan_analysis(
        spec.rollout.analysis,
        model=spec.model.name or name,
        state=state,
        assessment=assessment,
        template_hash=template_hash,
        known_good=known_good,
        pinned=pinned,
        previous=previous,
        live=live,
        now=time.time(),
    )


def _write_refusal(
    kube: Kube,
    watched: Watched,
    body: dict[str, Any],
    observed: Observed,
    deployment: dict[str, Any] | None,
    replicasets: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    crash_loop_restarts: int,
) -> bool:
    """Status for a spec that is refused: what is serving (the children as they are), assessed
    with the resource's own crash-loop threshold when its spec parses, the default otherwise."""
    state = observe_rollout(deployment, replicasets, pods)
    return _write_status(
        kube, watched, body, replace(observed, state=state, assessment=assess_rollout(state, crash_loop_restarts))
    )


# What the API server refused, per resource, with the children it judged: the same children are
# not sent again until what is rendered changes, so a stuck resource costs no requests.
REFUSED: dict[tuple[str, str], tuple[str, tuple[Problem, ...]]] = {}


def _judge(kube: Kube, target: Target, children: list[Child], live: dict[str, Any]) -> tuple[Problem, ...]:
    """Every child the API server would refuse, asked before any is applied (dryRun=All)."""
    key, fingerprint = (target.namespace, target.name), naming.content_hash([c.manifest for c in children])
    cached = REFUSED.get(key)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    refused = kube.dry_run_children(children, live)
    problems = tuple(p for kind, exc in refused.items() for p in refusal_problems(kind, exc, target))
    if problems:
        REFUSED[key] = (fingerprint, problems)
    else:
        REFUSED.pop(key, None)
    return problems


def _replicas(spec: api.ModelDeploymentSpec, deployment: dict[str, Any] | None) -> int:
    if not spec.autoscaling.enabled:
        return spec.replicas
    live = ((deployment or {}).get("spec") or {}).get("replicas")
    return int(live) if isinstance(live, int) else spec.autoscaling.min_replicas


def _needs_gpu_inventory(spec: api.ModelDeploymentSpec, template: dict[str, Any]) -> bool:
    return spec.rollout.max_surge == surge.AUTO and bool(surge.gpu_requests(template.get("spec") or {}))


def choose_plan(
    kube: Kube, spec: api.ModelDeploymentSpec, template: dict[str, Any], deployment: dict[str, Any] | None
) -> surge.SurgePlan:
    """The live Deployment's plan while its pod template stays; decided afresh, from the nodes and
    pods as they are now, when an update (or a rollback) is about to be applied."""
    kept = surge.kept_plan(spec.rollout, template, deployment)
    if kept is not None:
        return kept
    inventory = kube.gpu_inventory(max_age_s=0) if _needs_gpu_inventory(spec, template) else surge.Inventory()
    return surge.plan_surge(spec.rollout, _replicas(spec, deployment), template, inventory)


def _update_cost(
    kube: Kube,
    spec: api.ModelDeploymentSpec,
    template: dict[str, Any],
    deployment: dict[str, Any] | None,
    plan: surge.SurgePlan,
    verdict: Verdict,
) -> str:
    """While a rollout runs, the plan it runs with; otherwise what the next update would do, from
    an inventory at most a few seconds old (one read serves every resource's reconcile)."""
    if verdict == Verdict.PROGRESSING or not _needs_gpu_inventory(spec, template):
        return plan.message
    return surge.plan_surge(spec.rollout, _replicas(spec, deployment), template, kube.gpu_inventory()).message


def _sync_children(
    kube: Kube,
    settings: Settings,
    watched: Watched,
    target: Target,
    observed: Observed,
    replicasets: list[dict[str, Any]],
) -> tuple[dict[str, Any] | None, dict[str, Any], surge.SurgePlan, tuple[Problem, ...]]:
    """Applies what differs, unless the API server would refuse any of it; returns the Deployment
    as it now is, the pod template it should run, the update plan it has, and what was refused."""
    restore = _known_good_template(replicasets, observed.known_good) if observed.pinned else None
    children = render_children(target, settings, restore)
    if observed.pinned and restore is None:
        log.warning(
            "%s/%s: the last known good ReplicaSet is gone; leaving the Deployment as it is",
            target.namespace,
            target.name,
        )
        children = [c for c in children if c.kind != "Deployment"]
    template = restore if restore is not None else render_pod_template(target, settings)
    live = {c.kind: watched.get(c.kind, target.namespace, target.name) for c in children}
    plan = choose_plan(kube, target.spec, template, live.get("Deployment"))
    children = [
        replace(c, manifest=render_deployment(target, settings, restore, plan)) if c.kind == "Deployment" else c
        for c in children
    ]
    refused = _judge(kube, target, children, live)
    if not refused:
        try:
            synced = kube.sync_children(children, live, target.uid)
            _remember_writes(watched, live, synced)
            live = synced
        except Refused as exc:  # judged acceptable, refused all the same (admission, a race)
            refused = tuple(refusal_problems(exc.kind, exc, target))
            fingerprint = naming.content_hash([c.manifest for c in children])
            REFUSED[(target.namespace, target.name)] = (fingerprint, refused)
    deployment = live.get("Deployment") or watched.get("Deployment", target.namespace, target.name)
    return deployment, template, plan, refused


def _remember_writes(
    watched: Watched, before: dict[str, dict[str, Any] | None], after: dict[str, dict[str, Any] | None]
) -> None:
    """What the API server answered to each apply and delete, until the watch cache has it too."""
    for kind, now in after.items():
        was = before.get(kind)
        if now is was:
            continue
        if now is None:
            watched.wrote(kind, was, deleted=True)
        else:
            watched.wrote(kind, now)


def record_decision(
    observed: Observed, decision: Decision, template_hash: str, retry_token: str | None, now: str
) -> Observed:
    """What a decision changes in what status will say. Pure."""
    if decision.note:
        observed = replace(
            observed, assessment=replace(observed.assessment, message=f"{observed.assessment.message}; {decision.note}")
        )
    state, assessment = observed.state, observed.assessment
    if decision.action == Action.MARK_KNOWN_GOOD:
        return replace(
            observed,
            known_good=api.KnownGood(
                revision=state.revision or 0,
                generation=observed.generation,
                template_hash=template_hash,
                pod_template_hash=state.pod_template_hash or "",
                time=now,
            ),
        )
    if decision.action not in (Action.ROLL_BACK, Action.RECORD_FAILURE):
        return observed
    rolling_back = decision.action == Action.ROLL_BACK
    record = api.RollbackRecord(
        failed_generation=observed.generation,
        failed_revision=state.revision,
        restored_revision=observed.known_good.revision if rolling_back and observed.known_good else None,
        reason=assessment.reason,
        message=assessment.message,
        pod=assessment.pod,
        time=now,
        rolled_back=rolling_back,
        retry_token=retry_token,
    )
    if not rolling_back:
        return replace(observed, record=record)
    return replace(observed, record=record, pinned=True, rollback_count=observed.rollback_count + 1)


def _roll_back(
    kube: Kube,
    settings: Settings,
    watched: Watched,
    body: dict[str, Any],
    target: Target,
    observed: Observed,
    template: dict[str, Any],
) -> Observed:
    metrics.ROLLBACKS.labels(reason=observed.assessment.reason).inc()
    # Record the intent before acting: if the operator dies before the template is applied, the
    # next reconcile reads the record, is pinned to the known good template, and completes it.
    _write_status(kube, watched, body, observed)
    plan = choose_plan(kube, target.spec, template, None)
    restored = kube.apply(with_spec_hash(render_deployment(target, settings, template, plan)))
    watched.wrote("Deployment", restored)
    log.warning(
        "%s/%s: rolled back to revision %s: %s",
        target.namespace,
        target.name,
        observed.record.restored_revision if observed.record else None,
        observed.assessment.message,
    )
    state = observe_rollout(restored, [], [])
    return replace(observed, state=state, assessment=assess_rollout(state, target.spec.rollout.crash_loop_restarts))


def _known_good_template(replicasets: list[dict[str, Any]], known_good: api.KnownGood | None) -> dict[str, Any] | None:
    if known_good is None or not known_good.pod_template_hash:
        return None
    return replicaset_template(replicasets, known_good.pod_template_hash)


def _write_status(kube: Kube, watched: Watched, body: dict[str, Any], observed: Observed) -> bool:
    """Writes the status computed from `observed` if it differs from the one in `body` (which is
    then updated, so a second write in the same reconcile diffs against the first)."""
    old_dict = body.get("status") or {}
    previous = parse_status(old_dict)
    new = compute_status(observed, previous, now_rfc3339())
    new_dict = status_to_dict(new)
    patch = status_patch(old_dict, new_dict)
    if not patch:
        return False
    meta = body["metadata"]
    written = kube.patch_status(meta["namespace"], meta["name"], patch)
    watched.wrote(api.KIND, written)
    body["status"] = new_dict
    for event in events_for(previous, new):
        kube.emit_event(body, event.type, event.reason, event.message)
    return True
