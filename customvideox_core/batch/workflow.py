"""Fill an API-format ComfyUI workflow for one job, finding targets by ``class_type`` (never by node id).

API format: ``{node_id: {"class_type": str, "inputs": {name: value | [source_node_id, output_index]}}}``.
A two-element list ``["<node_id>", <int>]`` is a wire from another node's output.

Targets, located once per workflow by :func:`locate_targets`:

- reference image: the ``LoadImage`` upstream of ``CustomVideoXReferenceEncode.inputs.image``;
- mask: the ``LoadImageMask`` / ``LoadImage`` upstream of ``CustomVideoXReferenceEncode.inputs.mask`` or
  ``CustomVideoXERAEMask.inputs.reference_mask`` (optional in the workflow);
- prompt: the ``CLIPTextEncode`` upstream of each sampler's ``positive`` (sampler = ``CustomVideoXSample``,
  ``KSampler``, ``KSamplerAdvanced``, ``SamplerCustom`` or ``CFGGuider``), plus
  ``CustomVideoXERAEMask.inputs.prompt``;
- seed: ``CustomVideoXSample.seed``, ``KSampler.seed``, ``KSamplerAdvanced.noise_seed``,
  ``SamplerCustom.noise_seed``, ``RandomNoise.noise_seed``;
- TAB / ERAE overrides: ``CustomVideoXTimeAwareBias`` / ``CustomVideoXERAEMask`` inputs (a job without
  entity words keeps the workflow's, which must then occur in the job's prompt);
- guidance: the ``cfg`` input of every sampler / guider (``SAMPLER_CLASSES``) that has one, when a job gives
  ``cfg``;
- Stand-In strength: the ``strength`` input of every ``CustomVideoXApplyStandIn``, when a job gives
  ``standin_strength``;
- output name: ``filename_prefix`` of every node that has that input.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..entity_tokens import split_entity_words
from .jobs import Job

ApiWorkflow = dict[str, dict]
"""``{node_id: {"class_type": ..., "inputs": {...}}}``."""

REFERENCE_ENCODE = "CustomVideoXReferenceEncode"
TIME_AWARE_BIAS = "CustomVideoXTimeAwareBias"
ERAE_MASK = "CustomVideoXERAEMask"
APPLY_STANDIN = "CustomVideoXApplyStandIn"
SAMPLER_CLASSES = ("CustomVideoXSample", "KSampler", "KSamplerAdvanced", "SamplerCustom", "CFGGuider")
SEED_INPUTS = {
    "CustomVideoXSample": "seed",
    "KSampler": "seed",
    "KSamplerAdvanced": "noise_seed",
    "SamplerCustom": "noise_seed",
    "RandomNoise": "noise_seed",
}
IMAGE_LOADERS = ("LoadImage",)
MASK_LOADERS = ("LoadImageMask", "LoadImage")


class WorkflowError(ValueError):
    """The workflow cannot be used by the batch client at all (whatever the job)."""


class JobWorkflowError(ValueError):
    """This job asks for something the workflow has no input for (reported against the job's row)."""


@dataclass(frozen=True)
class UploadedImages:
    """Names the server gave the uploaded images (``subfolder/name`` when a subfolder was used)."""

    reference: str
    mask: str | None = None


@dataclass(frozen=True)
class WorkflowTargets:
    """Node ids of everything a job fills, located once per workflow."""

    reference_loader: str
    mask_loaders: tuple[str, ...]
    mask_inputs: tuple[tuple[str, str], ...]
    prompt_encoders: tuple[str, ...]
    erae_nodes: tuple[str, ...]
    tab_nodes: tuple[str, ...]
    seed_inputs: tuple[tuple[str, str], ...]
    save_nodes: tuple[str, ...]
    erae_entity_words: tuple[str, ...] = ()
    """Entity words written in the workflow's ERAEMask nodes (what a job without entity words keeps)."""
    cfg_nodes: tuple[str, ...] = ()
    """Samplers / guiders with a ``cfg`` value (not a wire): what a job's ``cfg`` sets."""
    standin_nodes: tuple[str, ...] = ()
    """Apply Stand-In nodes with a ``strength`` value: what a job's ``standin_strength`` sets."""

    @property
    def setting_nodes(self) -> tuple[str, ...]:
        """Every node a job can set an input of (what :func:`node_settings` writes into), each once."""
        seed_nodes = (node_id for node_id, _ in self.seed_inputs)
        return tuple(
            dict.fromkeys(
                (*self.erae_nodes, *self.tab_nodes, *seed_nodes, *self.cfg_nodes, *self.standin_nodes)
            )
        )

    def __post_init__(self) -> None:
        if not self.prompt_encoders:
            raise ValueError("a workflow needs at least one prompt encoder")
        if not self.seed_inputs:
            raise ValueError("a workflow needs at least one seed input")


def load_workflow(path: Path | str) -> ApiWorkflow:
    """Read an API-format workflow JSON file; refuse UI-format files with a hint."""
    path = Path(path)
    if not path.is_file():
        raise WorkflowError(
            f"workflow {path} does not exist; pass --workflow with an API-format workflow "
            "(in ComfyUI: Workflow → Export (API))"
        )
    try:
        workflow = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WorkflowError(f"workflow {path} is not valid JSON: {error}") from error
    if isinstance(workflow, dict) and "nodes" in workflow and "links" in workflow:
        raise WorkflowError(
            f"workflow {path} is in the editor's UI format; the batch client needs the API format "
            "(in ComfyUI: Workflow → Export (API))"
        )
    if isinstance(workflow, dict) and isinstance(workflow.get("prompt"), dict):
        workflow = workflow["prompt"]
    _check_api_format(workflow, path)
    return workflow


def _check_api_format(workflow: object, path: Path) -> None:
    if not isinstance(workflow, dict) or not workflow:
        raise WorkflowError(f"workflow {path} must be a JSON object of nodes, keyed by node id")
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"workflow {path}: node {node_id!r} has no class_type; is this API format?")
        if not isinstance(node.get("inputs", {}), dict):
            raise WorkflowError(f"workflow {path}: node {node_id!r} inputs must be an object")


def locate_targets(workflow: ApiWorkflow) -> WorkflowTargets:
    """Find every node a job fills; raise :class:`WorkflowError` naming what is missing or ambiguous."""
    encoders = _nodes_of_class(workflow, (REFERENCE_ENCODE,))
    if len(encoders) != 1:
        raise WorkflowError(
            f"the workflow must have exactly one {REFERENCE_ENCODE} node, found {len(encoders)}"
        )
    reference_encode = encoders[0]
    reference_loader = _single_upstream(
        workflow, reference_encode, "image", IMAGE_LOADERS, f"{REFERENCE_ENCODE}.image"
    )
    erae_nodes = _nodes_of_class(workflow, (ERAE_MASK,))
    mask_sources = [(reference_encode, "mask")] + [(node_id, "reference_mask") for node_id in erae_nodes]
    mask_loaders: list[str] = []
    mask_inputs: list[tuple[str, str]] = []
    for node_id, input_name in mask_sources:
        loaders = [
            loader
            for loader in _upstream_of_class(workflow, node_id, input_name, MASK_LOADERS)
            if loader != reference_loader
        ]
        if loaders:
            mask_inputs.append((node_id, input_name))
        mask_loaders.extend(loader for loader in loaders if loader not in mask_loaders)

    samplers = _nodes_of_class(workflow, SAMPLER_CLASSES)
    if not samplers:
        raise WorkflowError(f"the workflow has no sampler; expected one of {', '.join(SAMPLER_CLASSES)}")
    prompt_encoders: list[str] = []
    for sampler in samplers:
        label = f"{workflow[sampler]['class_type']}.positive (node {sampler})"
        encoder = _single_upstream(workflow, sampler, "positive", ("CLIPTextEncode",), label)
        if encoder not in prompt_encoders:
            prompt_encoders.append(encoder)

    seed_inputs = tuple(
        (node_id, SEED_INPUTS[node["class_type"]])
        for node_id, node in workflow.items()
        if node["class_type"] in SEED_INPUTS
    )
    if not seed_inputs:
        raise WorkflowError(
            "the workflow has no seed input; expected one of "
            + ", ".join(f"{cls}.{name}" for cls, name in SEED_INPUTS.items())
        )
    save_nodes = tuple(node_id for node_id, node in workflow.items() if "filename_prefix" in _inputs(node))
    cfg_nodes = tuple(
        node_id
        for node_id in samplers
        if "cfg" in _inputs(workflow[node_id]) and not _is_link(_inputs(workflow[node_id])["cfg"])
    )
    return WorkflowTargets(
        reference_loader=reference_loader,
        mask_loaders=tuple(mask_loaders),
        mask_inputs=tuple(mask_inputs),
        prompt_encoders=tuple(prompt_encoders),
        erae_nodes=tuple(erae_nodes),
        tab_nodes=tuple(_nodes_of_class(workflow, (TIME_AWARE_BIAS,))),
        seed_inputs=seed_inputs,
        save_nodes=save_nodes,
        erae_entity_words=tuple(
            word
            for node_id in erae_nodes
            if isinstance(_inputs(workflow[node_id]).get("entity_words"), str)
            for word in split_entity_words(_inputs(workflow[node_id])["entity_words"])
        ),
        cfg_nodes=cfg_nodes,
        standin_nodes=tuple(
            node_id
            for node_id in _nodes_of_class(workflow, (APPLY_STANDIN,))
            if not _is_link(_inputs(workflow[node_id]).get("strength"))
        ),
    )


def job_workflow_errors(targets: WorkflowTargets, job: Job) -> list[str]:
    """What this job asks for that the workflow cannot take (empty when the job fits)."""
    errors = []
    if job.mask is not None and not targets.mask_loaders:
        errors.append(
            f"workflow has no mask input (a LoadImageMask/LoadImage wired to {REFERENCE_ENCODE}.mask "
            f"or {ERAE_MASK}.reference_mask); remove the mask or use a workflow with one"
        )
    if job.entity_words and not targets.erae_nodes:
        errors.append(f"entity_words given but the workflow has no {ERAE_MASK} node")
    prompt = " ".join(job.prompt.lower().split())
    absent = [word for word in targets.erae_entity_words if word.lower() not in prompt]
    if not job.entity_words and absent:
        errors.append(
            f"no entity_words given, so the workflow's {ERAE_MASK} keeps its own "
            f"({', '.join(map(repr, absent))}), which this prompt does not contain; give entity_words: "
            "the words of the prompt that name the subject"
        )
    if job.erae.node_inputs() and not targets.erae_nodes:
        errors.append(f"erae_* overrides given but the workflow has no {ERAE_MASK} node")
    if job.tab.node_inputs() and not targets.tab_nodes:
        errors.append(f"tab_* overrides given but the workflow has no {TIME_AWARE_BIAS} node")
    if job.cfg is not None and not targets.cfg_nodes:
        errors.append(
            f"cfg given but no sampler in the workflow has a cfg value ({', '.join(SAMPLER_CLASSES)})"
        )
    if job.standin_strength is not None and not targets.standin_nodes:
        errors.append(
            f"standin_strength given but the workflow has no {APPLY_STANDIN} node with a strength value"
        )
    if job.output is not None and not targets.save_nodes:
        errors.append("output given but the workflow has no save node (no node has a filename_prefix input)")
    return errors


@dataclass(frozen=True)
class JobSetting:
    """One node input a job sets: ``column`` is the job file's name for it (``tab_peak``, ``seed``…)."""

    node_id: str
    input: str
    value: object
    column: str


def node_settings(targets: WorkflowTargets, job: Job) -> list[JobSetting]:
    """The TAB / ERAE overrides, seed, cfg and Stand-In strength ``job`` writes into the workflow, node input by node input."""
    settings = [
        JobSetting(node_id, name, value, f"erae_{name}")
        for node_id in targets.erae_nodes
        for name, value in job.erae.node_inputs().items()
    ]
    settings += [
        JobSetting(node_id, name, value, f"tab_{name}")
        for node_id in targets.tab_nodes
        for name, value in job.tab.node_inputs().items()
    ]
    settings += [JobSetting(node_id, name, job.seed, "seed") for node_id, name in targets.seed_inputs]
    if job.cfg is not None:
        settings += [JobSetting(node_id, "cfg", job.cfg, "cfg") for node_id in targets.cfg_nodes]
    if job.standin_strength is not None:
        settings += [
            JobSetting(node_id, "strength", job.standin_strength, "standin_strength")
            for node_id in targets.standin_nodes
        ]
    return settings


def fill_workflow(
    workflow: ApiWorkflow, targets: WorkflowTargets, job: Job, uploads: UploadedImages
) -> ApiWorkflow:
    """A filled deep copy of ``workflow`` for ``job``; the input workflow is left untouched.

    Raises :class:`JobWorkflowError` when the job needs an input the workflow lacks.
    """
    errors = job_workflow_errors(targets, job)
    if job.mask is not None and uploads.mask is None:
        errors.append("the job has a mask but no uploaded mask name was given")
    if errors:
        raise JobWorkflowError("; ".join(errors))
    filled = copy.deepcopy(workflow)

    def set_input(node_id: str, name: str, value: object) -> None:
        filled[node_id].setdefault("inputs", {})[name] = value

    set_input(targets.reference_loader, "image", uploads.reference)
    if uploads.mask is not None:
        for loader in targets.mask_loaders:
            set_input(loader, "image", uploads.mask)
    else:
        _detach_mask(filled, targets)
    for encoder in targets.prompt_encoders:
        set_input(encoder, "text", job.prompt)
    for node_id in targets.erae_nodes:
        set_input(node_id, "prompt", job.prompt)
        if job.entity_words:
            set_input(node_id, "entity_words", job.entity_words)
    for setting in node_settings(targets, job):
        set_input(setting.node_id, setting.input, setting.value)
    if job.output is not None:
        for node_id in targets.save_nodes:
            set_input(node_id, "filename_prefix", job.output)
    return filled


def _detach_mask(workflow: ApiWorkflow, targets: WorkflowTargets) -> None:
    """No mask for this job: unwire the (optional) mask inputs and drop the loader chain feeding them.

    Only nodes upstream of the removed wires that nothing else uses any more are dropped.
    """
    detached: list[str] = []
    for node_id, input_name in targets.mask_inputs:
        link = _inputs(workflow[node_id]).pop(input_name, None)
        if _is_link(link):
            detached.append(str(link[0]))
    candidates: set[str] = set()
    frontier = detached
    while frontier:
        current = frontier.pop()
        if current in candidates or current not in workflow:
            continue
        candidates.add(current)
        frontier.extend(str(value[0]) for value in _inputs(workflow[current]).values() if _is_link(value))
    removed = True
    while removed:
        used = {
            str(value[0]) for node in workflow.values() for value in _inputs(node).values() if _is_link(value)
        }
        orphans = [node_id for node_id in candidates if node_id in workflow and node_id not in used]
        for node_id in orphans:
            del workflow[node_id]
        removed = bool(orphans)


def _inputs(node: dict) -> dict:
    return node.get("inputs", {}) or {}


def _is_link(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _nodes_of_class(workflow: ApiWorkflow, classes: Iterable[str]) -> list[str]:
    wanted = set(classes)
    return [node_id for node_id, node in workflow.items() if node["class_type"] in wanted]


def _upstream_of_class(
    workflow: ApiWorkflow, node_id: str, input_name: str, classes: tuple[str, ...]
) -> list[str]:
    """Nodes of ``classes`` reached by walking wires upstream from ``node_id.inputs[input_name]``.

    The walk stops at the first matching node on each path (a loader's own inputs are not followed).
    """
    start = _inputs(workflow[node_id]).get(input_name)
    if not _is_link(start):
        return []
    found: list[str] = []
    seen: set[str] = set()
    frontier = [str(start[0])]
    while frontier:
        current = frontier.pop(0)
        if current in seen or current not in workflow:
            continue
        seen.add(current)
        if workflow[current]["class_type"] in classes:
            found.append(current)
            continue
        frontier.extend(str(value[0]) for value in _inputs(workflow[current]).values() if _is_link(value))
    return found


def _single_upstream(
    workflow: ApiWorkflow, node_id: str, input_name: str, classes: tuple[str, ...], label: str
) -> str:
    found = _upstream_of_class(workflow, node_id, input_name, classes)
    wanted = " or ".join(classes)
    if not found:
        raise WorkflowError(f"no {wanted} node is wired to {label}; the batch client fills that node")
    if len(found) > 1:
        raise WorkflowError(
            f"{len(found)} {wanted} nodes ({', '.join(found)}) feed {label}; "
            "the batch client can fill only one, so it would be ambiguous"
        )
    return found[0]
