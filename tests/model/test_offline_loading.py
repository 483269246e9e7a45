"""Nothing waits on the network for a local checkpoint: the image processor comes from the checkpoint
folder or from shipped settings, the hub is asked only for a name, and an unreachable hub fails fast."""

import json
import logging
import shutil
import time

import pytest

import flmr
from flmr.model.image_processing import (
    CLIP_MEAN,
    CLIP_STD,
    PUBLISHED_IMAGE_SETTINGS,
    ImageSettings,
    load_image_processor,
    published_image_settings,
)
from flmr.model.tiny import tiny_config
from helpers import FLMR_TINY, hub_unreachable_environment, run_python

# Counts every outgoing TCP connection of the process it runs in.
COUNT_CONNECTIONS = """
import socket
connections = []
_connect = socket.socket.connect
def counting_connect(self, address):
    connections.append(address)
    return _connect(self, address)
socket.socket.connect = counting_connect
"""


def test_an_image_query_on_a_local_checkpoint_makes_no_network_attempt(tmp_path) -> None:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(FLMR_TINY, checkpoint)
    settings = json.loads((checkpoint / "preprocessor_config.json").read_text())
    settings["image_mean"] = [0.25, 0.5, 0.75]  # a mark only this folder has
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(settings))
    code = (
        COUNT_CONNECTIONS
        + f"""
import json, time
from PIL import Image
import flmr

started = time.perf_counter()
retriever = flmr.Retriever.from_pretrained({str(checkpoint)!r})
Image.new("RGB", (40, 30), (200, 10, 10)).save({str(tmp_path / "red.png")!r})
index = retriever.index(["a red square", "a blue circle"], {str(tmp_path / "index")!r}, show_progress=False)
hits = retriever.search("what is this?", index, k=1, images=[{str(tmp_path / "red.png")!r}])[0]
processor = retriever.image_processor
print(json.dumps({{"seconds": time.perf_counter() - started, "connections": len(connections),
                   "mean": list(processor.image_mean), "crop": processor.crop_size["height"], "hits": len(hits)}}))
"""
    )
    result = run_python(code, env=hub_unreachable_environment())
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["connections"] == 0 and outcome["hits"] == 1
    assert outcome["mean"] == [0.25, 0.5, 0.75] and outcome["crop"] == 32
    assert outcome["seconds"] < 60  # generous for a loaded machine: the hub's retries alone took ~90 s


def test_naming_a_hub_processor_with_the_hub_unreachable_fails_at_once() -> None:
    code = f"""
import json, time
import flmr
from flmr.model.image_processing import load_image_processor

config = flmr.FLMRConfig.from_pretrained({str(FLMR_TINY)!r})
started = time.perf_counter()
try:
    load_image_processor(config, "openai/clip-vit-large-patch14")
    message = None
except OSError as error:
    message = str(error)
print(json.dumps({{"seconds": time.perf_counter() - started, "message": message}}))
"""
    env = hub_unreachable_environment()
    env["HF_HOME"] = "/nonexistent-flmr-hf-home"  # an empty hub cache
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["seconds"] < 5
    assert "image processor 'openai/clip-vit-large-patch14' is not a local folder" in outcome["message"]
    assert f"the hub at {env['HF_ENDPOINT']} cannot be reached" in outcome["message"]


@pytest.mark.parametrize("name", sorted(PUBLISHED_IMAGE_SETTINGS))
def test_the_published_vision_encoders_have_shipped_settings(name, caplog) -> None:
    config = tiny_config()
    config.vision_model_version = name
    config.vision_config.image_size = 224
    with caplog.at_level(logging.WARNING):
        processor = load_image_processor(config)
    assert not caplog.records
    assert processor.crop_size["height"] == processor.crop_size["width"] == 224
    assert processor.size["shortest_edge"] == 224
    assert tuple(processor.image_mean) == CLIP_MEAN and tuple(processor.image_std) == CLIP_STD
    assert processor.resample == 3  # bicubic


def test_an_unknown_vision_encoder_gets_clip_settings_at_its_size_with_a_warning(caplog) -> None:
    config = tiny_config()
    config.vision_model_version = "someone/custom-clip"
    with caplog.at_level(logging.WARNING):
        assert published_image_settings(config) == ImageSettings(32)
    assert "no image processor settings shipped for vision model 'someone/custom-clip'" in caplog.text


def test_save_pretrained_writes_the_image_processor(tmp_path) -> None:
    model = flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY)
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text())
    assert saved["crop_size"] == {"height": 32, "width": 32} and saved["image_mean"] == list(CLIP_MEAN)
    reloaded = flmr.FLMRModelForRetrieval.from_pretrained(tmp_path / "saved")
    assert load_image_processor(reloaded.config).to_dict() == load_image_processor(model.config).to_dict()


def test_a_mistyped_local_folder_is_named_as_a_folder() -> None:
    started = time.perf_counter()
    with pytest.raises(OSError, match="checkpoint folder './no/such_checkpoint' does not exist"):
        flmr.FLMRModelForRetrieval.from_pretrained("./no/such_checkpoint")
    assert time.perf_counter() - started < 1
