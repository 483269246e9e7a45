"""In-batch negatives gathered from all processes equal the single-process loss on the whole batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flmr
from helpers import minilm_folder, tiny_config


def build_model():
    torch.manual_seed(0)
    tokenizers = {
        "query_tokenizer": flmr.FLMRQueryEncoderTokenizer.from_pretrained(minilm_folder()),
        "context_tokenizer": flmr.FLMRContextEncoderTokenizer.from_pretrained(minilm_folder()),
    }
    return flmr.FLMRModelForRetrieval(tiny_config(), **tokenizers).eval()


QUERIES = ["q: capital of france", "q: golden gate", "q: robins eat", "q: beijing"]
DOCS = [
    "paris.",
    "a city.",
    "the bridge opened in 1937.",
    "fog.",
    "worms and berries.",
    "a bird.",
    "china.",
    "tea.",
]


def inputs_for(model, queries, docs):
    q, d = model.query_tokenizer(queries), model.context_tokenizer(docs, max_length=8 + len(docs[0]) % 5)
    return {
        "query_input_ids": q["input_ids"],
        "query_attention_mask": q["attention_mask"],
        "context_input_ids": d["input_ids"],
        "context_attention_mask": d["attention_mask"],
        "num_negative_examples": 1,
    }


def run_rank(rank, world_size, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = build_model()
        half = len(QUERIES) // world_size
        local = inputs_for(
            model, QUERIES[rank * half : (rank + 1) * half], DOCS[rank * 2 * half : (rank + 1) * 2 * half]
        )
        out = model(**local, use_in_batch_negatives=True, in_batch_negatives_from_all_gpus=True)
        out.loss.backward()
        results[rank] = out.loss.item()
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_in_batch_loss_equals_whole_batch_loss():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(run_rank, args=(2, free_port(), results), nprocs=2, join=True)
        gathered = dict(results)
    model = build_model()
    with torch.no_grad():
        whole = model(**inputs_for(model, QUERIES, DOCS), use_in_batch_negatives=True).loss.item()
    assert abs(gathered[0] - whole) < 1e-4
    assert abs(gathered[1] - whole) < 1e-4
