"""Queries are built as the original evaluation builds them: instruction, ":", question, image."""

import numpy as np
import torch

import helpers
from flmr import FLMRModelForRetrieval
from flmr.evaluation import query_image, query_text

INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question"


def test_instruction_is_made_to_end_with_a_colon():
    assert query_text(INSTRUCTION, "What is this?", ":") == f"{INSTRUCTION}: What is this?"
    assert query_text(f"  {INSTRUCTION}:  ", " What is this? ", ":") == f"{INSTRUCTION}: What is this?"


def test_colons_are_written_with_the_mask_instruction_token():
    assert query_text("Note: read this", "q", "|") == "Note| read this| q"
    # a checkpoint without mask_instruction_token (FLMR) keeps the colon
    assert query_text("Instruction", "q", None) == "Instruction: q"


def test_missing_parts():
    # without an instruction, PreFLMR reads an empty one, so the question's own ":" masks nothing
    assert query_text(None, "Dune: who wrote it?", ":") == ": Dune: who wrote it?"
    assert query_text("", "What is this?", ":") == ": What is this?"
    assert query_text(None, "Dune: who wrote it?", None) == "Dune: who wrote it?"
    # image-only tasks (CC, WIT) have no question
    assert query_text("Describe the image", None, ":") == "Describe the image:"


def test_black_336_image_when_a_row_has_none():
    for missing in (None, ""):
        image = query_image(missing, "/images")
        assert image.size == (336, 336) and image.mode == "RGB"
        assert not np.asarray(image).any()


def test_image_path_is_joined_to_the_root():
    assert query_image("inat/1.jpg", "/data/EVQA") == "/data/EVQA/inat/1.jpg"
    assert query_image("inat/1.jpg", None) == "inat/1.jpg"


def test_instruction_tokens_are_masked_by_preflmr():
    """Every token from after the [Q] marker up to the ':' gets a zero vector; the question's do not."""
    model = FLMRModelForRetrieval.from_pretrained(helpers.PREFLMR_TINY).eval()
    text = query_text(INSTRUCTION, "who built it", model.config.mask_instruction_token)
    encoding = model.query_tokenizer([text])
    with torch.inference_mode():
        vectors = model.query(**encoding).late_interaction_output[0]
    ids = encoding["input_ids"][0].tolist()
    colon = ids.index(model.query_tokenizer.convert_tokens_to_ids(":"))
    kept = (vectors[: len(ids)].norm(dim=-1) > 0).tolist()
    assert kept[:2] == [True, True]
    assert not any(kept[2 : colon + 1])
    skip = set(model.config.query_mask_input_ids_skip_list)
    assert all(kept[i] for i in range(colon + 1, len(ids)) if ids[i] not in skip)
