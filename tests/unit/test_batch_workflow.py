"""Filling an API-format workflow for a job: targets found by class_type and wiring, not node ids."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from batch_stub_server import api_workflow

from customvideox_core.batch.jobs import EraeOverrides, Job, TabOverrides
from customvideox_core.batch.workflow import (
    JobWorkflowError,
    UploadedImages,
    WorkflowError,
    fill_workflow,
    job_workflow_errors,
    load_workflow,
    locate_targets,
)


def make_job(**changes: object) -> Job:
    fields: dict[str, object] = {
        "line": 2,
        "name": "job_0001",
        "reference": Path("/refs/cat.png"),
        "prompt": "a cat surfing a wave",
        "seed": 1234,
    }
    fields.update(changes)
    return Job(**fields)  # type: ignore[arg-type]


def relabel(workflow: dict, mapping: dict[str, str]) -> dict:
    """The same graph with node ids renamed (wires follow)."""

    def relink(value: object) -> object:
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            return [mapping[value[0]], value[1]]
        return value

    return {
        mapping[node_id]: {
            "class_type": node["class_type"],
            "inputs": {name: relink(value) for name, value in node["inputs"].items()},
        }
        for node_id, node in workflow.items()
    }


def test_targets_follow_the_wiring() -> None:
    targets = locate_targets(api_workflow())
    assert targets.reference_loader == "img"  # through the ImageScale node
    assert targets.mask_loaders == ("maskload",)
    assert set(targets.mask_inputs) == {("ref", "mask"), ("erae", "reference_mask")}
    assert targets.prompt_encoders == ("pos",)  # the positive one, not "neg"
    assert targets.seed_inputs == (("sample", "seed"),)
    assert targets.erae_nodes == ("erae",) and targets.tab_nodes == ("tab",)
    assert targets.save_nodes == ("save",)


def test_fill_sets_every_target_and_leaves_everything_else_alone() -> None:
    workflow = api_workflow()
    original = copy.deepcopy(workflow)
    job = make_job(
        mask=Path("/refs/cat_mask.png"),
        entity_words="cat",
        output="cats/surf",
        tab=TabOverrides(shape="custom", peak=2.0, custom_values="0,1,0"),
        erae=EraeOverrides(threshold=0.25),
    )
    filled = fill_workflow(
        workflow, locate_targets(workflow), job, UploadedImages("cat (1).png", "cat_mask.png")
    )
    assert workflow == original, "the template workflow must not be modified"

    expected = copy.deepcopy(original)
    expected["img"]["inputs"]["image"] = "cat (1).png"
    expected["maskload"]["inputs"]["image"] = "cat_mask.png"
    expected["pos"]["inputs"]["text"] = "a cat surfing a wave"
    expected["erae"]["inputs"].update(prompt="a cat surfing a wave", entity_words="cat", threshold=0.25)
    expected["tab"]["inputs"].update(shape="custom", peak=2.0, custom_values="0,1,0")
    expected["sample"]["inputs"]["seed"] = 1234
    expected["save"]["inputs"]["filename_prefix"] = "cats/surf"
    assert filled == expected


def test_job_without_mask_unwires_the_mask_and_drops_its_loader() -> None:
    workflow = api_workflow()
    filled = fill_workflow(workflow, locate_targets(workflow), make_job(), UploadedImages("cat.png"))
    assert "maskload" not in filled
    assert "mask" not in filled["ref"]["inputs"]
    assert "reference_mask" not in filled["erae"]["inputs"]
    assert set(filled) == set(workflow) - {"maskload"}
    assert filled["save"]["inputs"]["filename_prefix"] == "CustomVideoX", "no output name keeps the prefix"


def test_mask_loader_chain_shared_with_other_nodes_is_kept() -> None:
    workflow = api_workflow()
    workflow["invert"] = {"class_type": "InvertMask", "inputs": {"mask": ["maskload", 0]}}
    workflow["ref"]["inputs"]["mask"] = ["invert", 0]
    workflow["preview"] = {"class_type": "MaskPreview", "inputs": {"mask": ["maskload", 0]}}
    filled = fill_workflow(workflow, locate_targets(workflow), make_job(), UploadedImages("cat.png"))
    assert "invert" not in filled, "only used by the unwired mask input"
    assert "maskload" in filled, "still used by the preview node"


def test_node_ids_do_not_matter() -> None:
    workflow = api_workflow()
    mapping = {node_id: str(100 + index) for index, node_id in enumerate(reversed(list(workflow)))}
    renamed = relabel(workflow, mapping)
    job = make_job(mask=Path("/m.png"), output="x")
    uploads = UploadedImages("cat.png", "m.png")
    filled_original = fill_workflow(workflow, locate_targets(workflow), job, uploads)
    filled_renamed = fill_workflow(renamed, locate_targets(renamed), job, uploads)
    assert filled_renamed == relabel(filled_original, mapping)


def test_ksampler_graph_with_apply_node() -> None:
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "3": {"class_type": "CustomVideoXReferenceEncode", "inputs": {"vae": ["1", 2], "image": ["2", 0]}},
        "4": {"class_type": "CustomVideoXApply", "inputs": {"model": ["1", 0], "reference": ["3", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "bad"}},
        "7": {
            "class_type": "KSampler",
            "inputs": {"model": ["4", 0], "positive": ["5", 0], "negative": ["6", 0], "seed": 1},
        },
        "8": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["7", 0], "filename_prefix": "p"}},
    }
    targets = locate_targets(workflow)
    filled = fill_workflow(workflow, targets, make_job(seed=99), UploadedImages("cat.png"))
    assert (filled["2"]["inputs"]["image"], filled["5"]["inputs"]["text"]) == (
        "cat.png",
        "a cat surfing a wave",
    )
    assert (filled["6"]["inputs"]["text"], filled["7"]["inputs"]["seed"]) == ("bad", 99)
    job_with_extras = make_job(mask=Path("/m.png"), entity_words="cat", tab=TabOverrides(peak=1.0))
    errors = " ".join(job_workflow_errors(targets, job_with_extras))
    assert "workflow has no mask input" in errors
    assert "no CustomVideoXERAEMask node" in errors
    assert "no CustomVideoXTimeAwareBias node" in errors
    with pytest.raises(JobWorkflowError, match="workflow has no mask input"):
        fill_workflow(workflow, targets, make_job(mask=Path("/m.png")), UploadedImages("a.png", "b.png"))


def test_reference_loader_mask_output_is_not_a_mask_input() -> None:
    workflow = api_workflow(with_mask=False)
    workflow["ref"]["inputs"]["mask"] = ["img", 1]  # the reference image's own alpha
    targets = locate_targets(workflow)
    assert targets.mask_loaders == ()
    assert job_workflow_errors(targets, make_job(mask=Path("/m.png")))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda w: w.pop("ref"), "exactly one CustomVideoXReferenceEncode"),
        (
            lambda w: w["ref"]["inputs"].pop("image"),
            "no LoadImage node is wired to CustomVideoXReferenceEncode.image",
        ),
        (lambda w: w.pop("sample"), "no sampler"),
        (lambda w: w["sample"]["inputs"].update(positive=["neg", 0]) or w.pop("pos"), None),
        (
            lambda w: (
                w.update(
                    extra={"class_type": "LoadImage", "inputs": {"image": "b.png"}},
                    batch={
                        "class_type": "ImageBatch",
                        "inputs": {"image1": ["img", 0], "image2": ["extra", 0]},
                    },
                )
                or w["scale"]["inputs"].update(image=["batch", 0])
            ),
            "2 LoadImage nodes",
        ),
        (
            lambda w: (
                w.update(cond={"class_type": "ConditioningZeroOut", "inputs": {}})
                or w["sample"]["inputs"].update(positive=["cond", 0])
            ),
            "no CLIPTextEncode node is wired to CustomVideoXSample.positive",
        ),
    ],
)
def test_unusable_workflows_name_what_is_missing(edit, message: str | None) -> None:
    workflow = api_workflow()
    edit(workflow)
    if message is None:  # positive and negative sharing one encoder is fine
        assert locate_targets(workflow).prompt_encoders == ("neg",)
        return
    with pytest.raises(WorkflowError, match=message):
        locate_targets(workflow)


def test_missing_seed_input_is_a_workflow_error() -> None:
    workflow = api_workflow()
    workflow["sample"]["class_type"] = "CFGGuider"
    with pytest.raises(WorkflowError, match="no seed input"):
        locate_targets(workflow)
    workflow["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}}
    assert locate_targets(workflow).seed_inputs == (("noise", "noise_seed"),)


def test_load_workflow_refuses_ui_format_and_accepts_api_format(tmp_path: Path) -> None:
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(WorkflowError, match="API format"):
        load_workflow(ui)
    api = tmp_path / "api.json"
    api.write_text(json.dumps(api_workflow()))
    assert load_workflow(api) == api_workflow()
    with pytest.raises(WorkflowError, match="does not exist"):
        load_workflow(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"1": {"inputs": {}}}))
    with pytest.raises(WorkflowError, match="no class_type"):
        load_workflow(broken)


def test_a_job_without_entity_words_needs_the_workflows_words_in_its_prompt() -> None:
    workflow = api_workflow()
    workflow["erae"]["inputs"]["entity_words"] = "teddy bear, red  Scarf"  # the example prompt's words
    targets = locate_targets(workflow)
    assert targets.erae_entity_words == ("teddy bear", "red Scarf")

    (error,) = job_workflow_errors(targets, make_job(prompt="a teddy bear on a beach"))
    assert "no entity_words given" in error and "'red Scarf'" in error and "'teddy bear'" not in error
    assert job_workflow_errors(targets, make_job(prompt="A Teddy  bear in a RED scarf, waving")) == []
    assert job_workflow_errors(targets, make_job(prompt="a cat surfing", entity_words="cat")) == []
    with pytest.raises(JobWorkflowError, match="give entity_words"):
        fill_workflow(workflow, targets, make_job(prompt="a cat surfing"), UploadedImages("cat.png"))

    workflow["erae"]["inputs"]["entity_words"] = ["words", 0]  # wired from another node: not checked
    assert locate_targets(workflow).erae_entity_words == ()
