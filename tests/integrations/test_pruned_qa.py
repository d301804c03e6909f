"""The evaluation runner behind the lmms-eval plug-in: bad model arguments fail at once, naming themselves;
a pruning label never runs unpruned; the exported task names a document whose video is missing."""

import json

import pytest

from videoprune.integrations.pruned_qa import EvalSettings, PrunedVideoQA


@pytest.mark.parametrize("args,named", [
    ({"method": "tome"}, "method"),
    ({"method": "evs", "rate": 1.0}, "rate"),
    ({"method": "evs", "rate": -0.1}, "rate"),
    ({"method": "evs"}, "rate"),
    ({"method": "none", "rate": 0.5}, "rate"),
    ({"method": "evs-threshold", "rate": 0.5}, "threshold"),
    ({"method": "evs", "rate": 0.5, "threshold": 0.1}, "threshold"),
    ({"method": "evs", "rate": 0.5, "scorer_path": "x.safetensors"}, "scorer_path"),
    ({"method": "uniform", "rate": 0.5, "fps": 1.0}, "fps"),
    ({"max_frames": 0}, "max_frames"),
    ({"dtype": "int8"}, "dtype"),
    ({"pretrainedd": "default"}, "pretrainedd"),
])
def test_bad_model_argument_is_one_error_naming_it(args, named):
    """Each bad argument is a ValueError whose message names the argument."""
    with pytest.raises(ValueError, match=named):
        EvalSettings.from_args(args)


def test_scorer_path_not_fitting_the_checkpoint_is_named(tmp_path):
    """A scorer_path that is not this model's STTS scorer fails at load, naming scorer_path; nothing runs unpruned."""
    pytest.importorskip("transformers")
    from safetensors.torch import save_file
    import torch

    bad = tmp_path / "scorer.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="scorer_path"):
        PrunedVideoQA(EvalSettings(method="stts", rate=0.5, scorer_path=str(bad), device="cpu"))


def test_pruning_label_never_reports_unpruned_answers():
    """If the patch is gone when a prefill runs, the runner raises instead of answering unpruned."""
    pytest.importorskip("transformers")
    from videoprune.bundle import sample_question, sample_video

    qa = PrunedVideoQA(EvalSettings(method="evs", rate=0.75, device="cpu"))
    assert qa.generate([(sample_video(), sample_question())], ["s0"], max_new_tokens=1)
    assert qa.samples[-1]["video_tokens_after"] < qa.samples[-1]["video_tokens_before"]
    qa.handle.remove()
    with pytest.raises(RuntimeError, match="unpruned"):
        qa.generate([(sample_video(), sample_question())], ["s1"], max_new_tokens=1)


def test_loglikelihood_of_the_greedy_answer_is_greedy():
    """The greedy answer's continuation is reported greedy, with a finite negative log-probability."""
    pytest.importorskip("transformers")
    from videoprune.bundle import sample_question, sample_video

    qa = PrunedVideoQA(EvalSettings(method="evs", rate=0.5, device="cpu"))
    answer = qa.generate([(sample_video(), sample_question())], ["g"], max_new_tokens=1)[0]
    logp, greedy = qa.loglikelihood(sample_video(), sample_question(), answer, "l")
    assert greedy and logp <= 0.0


def test_exported_task_names_the_document_with_a_missing_video(tmp_path):
    """The task's doc_to_visual raises FileNotFoundError naming the document id when its clip is gone."""
    import importlib.util

    from videoprune.integrations.lmms_task import ExportTaskConfig, export_lmms_task

    res = export_lmms_task(tmp_path / "task", ExportTaskConfig(num=2), progress=False)
    spec = importlib.util.spec_from_file_location("task_utils", tmp_path / "task" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    docs = [json.loads(x) for x in open(res["jsonl"])]
    assert utils.doc_to_visual(docs[0])[0].endswith(".mp4")
    assert utils.doc_to_text(docs[0]) == docs[0]["question"]
    (tmp_path / "task" / docs[1]["video"]).unlink()
    with pytest.raises(FileNotFoundError, match=docs[1]["id"]):
        utils.doc_to_visual(docs[1])


def test_export_cli_writes_task_and_prints_json(tmp_path, capsys):
    """`videoprune export-lmms-task DIR --num N` writes the YAML, and its last stdout line is JSON."""
    from videoprune.cli import main

    assert main(["export-lmms-task", str(tmp_path / "t"), "--num", "2", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["num"] == 2 and (tmp_path / "t" / "videoprune_temporal_qa.yaml").exists()
    assert (tmp_path / "t" / "data" / "test-seed3" / "test.jsonl").exists()


@pytest.mark.parametrize("args", [
    {"method": "none"},
    {"method": "evs", "rate": 0.75},
    {"method": "evs-pixel", "rate": 0.75},
    {"method": "evs-pre", "rate": 0.75},
    {"method": "evs-threshold", "threshold": 0.05},
    {"method": "random", "rate": 0.75},
    {"method": "uniform", "rate": 0.75},
    {"method": "stts", "rate": 0.75},
    {"method": "evs", "rate": 0.5, "max_frames": 8, "max_pixels": 12544},
])
def test_every_method_answers_and_counts_its_tokens(args):
    """Every bench-accuracy method answers through the runner; pruning ones keep fewer video tokens than the clip has."""
    pytest.importorskip("transformers")
    from videoprune.bundle import sample_question, sample_video

    qa = PrunedVideoQA(EvalSettings(device="cpu", **args))
    [text] = qa.generate([(sample_video(), sample_question())], ["s"], max_new_tokens=2)
    assert isinstance(text, str)
    rec = qa.samples[-1]
    if args["method"] == "none":
        assert rec["video_tokens_after"] == rec["video_tokens_before"] > 0
    else:
        assert 0 < rec["video_tokens_after"] < rec["video_tokens_before"]
