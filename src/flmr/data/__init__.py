"""A small collection shipped with flmr, for demos, tests and benchmarks.

``sample_collection.jsonl`` holds 200 short passages, one per Debian package: the package's
one-line summary and the first paragraph of its long description, from the Debian 12 (bookworm)
``Translation-en`` lists (Debian package descriptions are free to redistribute). Each line is
``{"id": package, "text": "package: summary. description", "metadata": {"summary", "source"}}``.
Text only, so any checkpoint (with or without a vision encoder) can index it.

Example:
    >>> from flmr.data import SAMPLE_COLLECTION, SAMPLE_QUERIES
    >>> from flmr.encoding import read_collection
    >>> len(read_collection(SAMPLE_COLLECTION)), SAMPLE_QUERIES[0]
    (200, 'Which text editor can I use in a terminal?')

On the command line, ``--collection sample`` names it: ``flmr index --collection sample ...``.

``bert-base-uncased/vocab.txt`` is the WordPiece vocabulary of bert-base-uncased (Apache-2.0, from
Google's BERT release), the tokenizers' vocabulary in every published FLMR / PreFLMR checkpoint; the
tiny checkpoints of `flmr.model.tiny` use it.

``flmr.data.m2kr`` reads M2KR-style task data (queries and passages) for evaluation and training.
"""

from pathlib import Path

SAMPLE_COLLECTION_NAME = "sample"
SAMPLE_COLLECTION = Path(__file__).resolve().parent / "sample_collection.jsonl"
BERT_VOCAB_FOLDER = Path(__file__).resolve().parent / "bert-base-uncased"
SAMPLE_QUERIES = [
    "Which text editor can I use in a terminal?",
    "How do I play chess against the computer?",
    "a program to edit photos and raw camera images",
    "What can I use to capture network packets?",
    "Which web server can act as a reverse proxy?",
    "a tool to compress files with high ratio",
    "How can I plot data and functions?",
    "software to keep track of my personal finances",
]

__all__ = ["BERT_VOCAB_FOLDER", "SAMPLE_COLLECTION", "SAMPLE_COLLECTION_NAME", "SAMPLE_QUERIES"]
