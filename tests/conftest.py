"""Fixtures shared across test folders."""

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """Path of a saved tiny synthetic-QA model (random weights, 12-frame clips): the default model's recipe at CI size."""
    pytest.importorskip("transformers")
    from videoprune.data.qa_model import build_qa_model, save_bundle
    from videoprune.train.tokenizer import build_word_tokenizer

    path = tmp_path_factory.mktemp("tiny-qa")
    tok = build_word_tokenizer()
    save_bundle(build_qa_model(tok, "tiny"), tok, path, num_frames=12)
    return str(path)
