"""flmr: index collections, search them, serve them over HTTP.

Examples:
    flmr tiny-checkpoint /tmp/flmr-tiny    # a tiny random checkpoint, to try the commands offline
    flmr index --checkpoint /tmp/flmr-tiny --collection sample --output /tmp/idx
    flmr info /tmp/idx
    flmr search /tmp/idx "Which text editor can I use in a terminal?"
    flmr search /tmp/idx "What is shown here?" --image photo.jpg --json
    flmr serve /tmp/idx --port 8000
    flmr score --checkpoint LinWeizheDragon/PreFLMR_ViT-B --query "what is this?" --image photo.jpg \\
        --document "The Eiffel Tower is in Paris." --document "Big Ben is in London."

Run `flmr COMMAND --help` for the options of each command.
"""

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable

from flmr import __version__
from flmr._deprecation import warn_renamed
from flmr.cli.search_options import add_search_options
from flmr.search.filters import FilterError, MetadataFilter, parse_filter

from .evaluate import add_evaluate_command
from .exit_codes import EXIT_BROKEN_PIPE, EXIT_CODES_HELP, EXIT_FAILURE, EXIT_INTERRUPTED
from .loading import device_name, positive_int
from .quiet import quiet_output
from .train import add_train_command

# Only argparse and light modules load before the command line is parsed: `--help`, `--version` and
# usage errors answer at once, and each command imports torch and transformers when it runs.
_FORMATTER = argparse.RawDescriptionHelpFormatter
# flmr.index.SUPPORTED_NBITS, which imports torch (tests/cli check that they agree)
NBITS_CHOICES = (1, 2, 4, 8)


def lazy_handler(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    """A command handler that imports ``module`` (and with it torch) only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), function)(args)

    run.__qualname__ = f"{module}.{function}"
    return run


def _quiet_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress bars, no log lines below errors (also from transformers)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flmr", description=__doc__, epilog=EXIT_CODES_HELP, formatter_class=_FORMATTER
    )
    parser.add_argument("--version", action="version", version=f"flmr {__version__}")
    _quiet_option(parser, default=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_tiny_checkpoint(commands)
    _add_index(commands)
    _add_info(commands)
    _add_search(commands)
    _add_serve(commands)
    _add_score(commands)
    add_evaluate_command(commands)
    add_train_command(commands)
    return parser


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, examples: str
) -> argparse.ArgumentParser:
    command = commands.add_parser(
        name,
        help=summary,
        description=f"{summary}\n\nexamples:\n{examples}",
        epilog=EXIT_CODES_HELP,
        formatter_class=_FORMATTER,
    )
    # `flmr COMMAND ... --quiet` as well as `flmr --quiet COMMAND ...` (SUPPRESS keeps the latter's value)
    _quiet_option(command, default=argparse.SUPPRESS)
    return command


def _add_tiny_checkpoint(commands: argparse._SubParsersAction) -> None:
    tiny = _command(
        commands,
        "tiny-checkpoint",
        "Write a tiny randomly initialised checkpoint folder (3 MB, offline, in a second).",
        "  flmr tiny-checkpoint /tmp/flmr-tiny\n"
        "  flmr tiny-checkpoint /tmp/preflmr-tiny --style preflmr\n\n"
        "Its weights are random, so its rankings mean nothing: it is for trying the commands and for\n"
        "tests without network. For real retrieval use a published checkpoint, e.g.\n"
        "LinWeizheDragon/PreFLMR_ViT-B (needs hub access once; then HF_HUB_OFFLINE=1 reads the cache).",
    )
    tiny.add_argument("output", metavar="FOLDER", help="where to write the checkpoint")
    tiny.add_argument(
        "--style",
        choices=("flmr", "preflmr"),
        default="flmr",
        help="FLMR (MLP mapping network) or PreFLMR (transformer mapping network) (default: %(default)s)",
    )
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")
    tiny.add_argument(
        "--overwrite",
        action="store_true",
        help="write into FOLDER even if it exists (its checkpoint files are replaced)",
    )
    tiny.set_defaults(handler=lazy_handler("flmr.cli.commands", "run_tiny_checkpoint"))


# flmr.model.precision.PRECISIONS, which imports torch (tests/model/test_precision.py checks they agree)
PRECISION_CHOICES = ("float32", "bfloat16", "int8", "auto")


class _DeprecatedFlag(argparse.Action):
    """An option's earlier name: stores under the new one's ``dest``, with a ``DeprecationWarning`` and a
    line on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new_flag: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]
        self.new_flag = new_flag

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option: str | None = None,
    ) -> None:
        # the warning for programs and tests, the line for people (Python hides DeprecationWarning)
        warn_renamed(parser.prog, str(option), self.new_flag, stacklevel=2)
        print(f"{parser.prog}: {option} is deprecated, use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _deprecated_flag(parser: argparse.ArgumentParser, old: str, new: str, **kwargs: object) -> None:
    """Accept ``old`` (hidden from ``--help``) as the earlier name of the option ``new``."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(
        old, dest=dest, action=_DeprecatedFlag, new_flag=new, default=argparse.SUPPRESS, **kwargs
    )  # type: ignore[arg-type]


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="float32",
        help="inference precision of the encoder: bfloat16 is fast only on CPUs with AMX / AVX-512 BF16, "
        "int8 quantises the encoders' linear layers (CPU only), auto picks bfloat16 where the CPU "
        "computes it natively (default: %(default)s; see README, 'Speed on CPU')",
    )


def _add_index(commands: argparse._SubParsersAction) -> None:
    index = _command(
        commands,
        "index",
        "Encode a collection with a checkpoint and write a compressed (PLAID) index folder.",
        "  flmr index --checkpoint LinWeizheDragon/PreFLMR_ViT-B --collection passages.jsonl --output my_index\n"
        "  flmr index --checkpoint ./my_flmr --collection sample --output /tmp/idx --nbits 4 --overwrite\n"
        "  flmr index --checkpoint ./my_flmr --dataset ./saved_dataset --split train --output idx --device cuda\n\n"
        'A JSONL collection has one document per line: {"id": ..., "text": ..., "image_path": ...,\n'
        '"metadata": {...}} (image_path and metadata optional). Relative image paths start from\n'
        "--image-root, by default the collection's folder. The index records the checkpoint, so\n"
        "`flmr search` and `flmr serve` find it again.",
    )
    source = index.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--collection",
        metavar="FILE",
        help="a JSONL collection file, or `sample` for the 200 passages shipped with flmr",
    )
    source.add_argument(
        "--dataset",
        metavar="NAME_OR_FOLDER",
        help="a Hugging Face dataset: a folder saved with save_to_disk, or a dataset name (needs `datasets`)",
    )
    index.add_argument("--split", default="train", help="split of --dataset (default: %(default)s)")
    index.add_argument("--checkpoint", required=True, help="checkpoint folder or hub name")
    index.add_argument("--output", required=True, metavar="FOLDER", help="where to write the index")
    index.add_argument(
        "--nbits",
        type=int,
        choices=NBITS_CHOICES,
        default=2,
        help="bits per residual dimension (default: %(default)s)",
    )
    index.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="documents per forward pass (default: %(default)s)",
    )
    index.add_argument(
        "--doc-maxlen",
        type=positive_int,
        default=512,
        help="token limit of a document (default: %(default)s)",
    )
    _deprecated_flag(index, "--max-length", "--doc-maxlen", type=positive_int)
    index.add_argument(
        "--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N (default: %(default)s)"
    )
    _add_precision(index)
    index.add_argument("--image-root", metavar="FOLDER", help="folder relative image paths start from")
    index.add_argument("--overwrite", action="store_true", help="replace an existing index at --output")
    scale_out = index.add_argument_group(
        "scale-out on Ray (needs `pip install flmr[ray]`; see docs/scale-out.md)"
    )
    scale_out.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="encode and build on a Ray cluster (an address, `auto`, or `local` for one in this process)",
    )
    scale_out.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="encoding actors, one model each (default: %(default)s)",
    )
    scale_out.add_argument(
        "--gpus-per-worker", type=float, default=0, help="GPUs per encoding actor (default: %(default)s)"
    )
    scale_out.add_argument(
        "--shards",
        type=positive_int,
        default=1,
        help="shard indexes to write; more than 1 writes a sharded index folder (default: %(default)s)",
    )
    index.set_defaults(handler=lazy_handler("flmr.cli.commands", "run_index"))


def _add_info(commands: argparse._SubParsersAction) -> None:
    info = _command(
        commands,
        "info",
        "Show what an index holds: checkpoint, settings, size on disk, document count.",
        "  flmr info my_index\n  flmr info my_index --json\n  flmr info my_index --verify",
    )
    info.add_argument("index", help="index folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument(
        "--verify", action="store_true", help="check every file against its checksum (exit 1 if damaged)"
    )
    info.set_defaults(handler=lazy_handler("flmr.cli.commands", "run_info"))


def filter_json(value: str) -> MetadataFilter | None:
    """argparse type of ``--filter``: a metadata filter as JSON (see ``flmr.search.filters``)."""
    try:
        return parse_filter(value)
    except FilterError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def unit_float(value: str) -> float:
    """argparse type of ``--hybrid-weight``: a number from 0 to 1."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {number}")
    return number


def _add_search(commands: argparse._SubParsersAction) -> None:
    search = _command(
        commands,
        "search",
        "Answer a question from an index: print the ranked documents.",
        '  flmr search my_index "Which text editor can I use in a terminal?"\n'
        '  flmr search my_index "What is the name of this building?" --image photo.jpg -k 5 --json\n'
        '  flmr search my_index "terminal editor" --filter \'{"year": {"$gte": 2000}, "lang": "en"}\'\n'
        '  flmr search my_index "libssl3 upgrade" --hybrid-weight 0.3\n\n'
        "The checkpoint defaults to the one the index was built with.",
    )
    search.add_argument("index", help="index folder")
    search.add_argument("question", help='the question ("" to search by --image alone)')
    search.add_argument("--image", metavar="FILE", help="an image that goes with the question")
    search.add_argument(
        "--instruction",
        help="what a PreFLMR checkpoint reads before the question (default: the one it was trained with "
        "for this kind of query; '' for none)",
    )
    search.add_argument("-k", type=positive_int, default=10, help="how many documents (default: %(default)s)")
    search.add_argument("--checkpoint", help="checkpoint to encode the question (default: the index's)")
    search.add_argument(
        "--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N (default: %(default)s)"
    )
    _add_precision(search)
    add_search_options(search, "score every document by full MaxSim (exact; slow on large indexes)")
    search.add_argument(
        "--filter",
        type=filter_json,
        metavar="JSON",
        help='only documents whose metadata match, e.g. \'{"lang": "en", "tag": {"$in": ["a", "b"]}}\' '
        "(operators $eq $ne $gt $gte $lt $lte $in $nin $exists; '$id' is the document id)",
    )
    search.add_argument(
        "--hybrid-weight",
        type=unit_float,
        metavar="W",
        help="fuse with BM25 over the document texts, W (0 to 1) being BM25's share",
    )
    search.add_argument(
        "--fusion",
        choices=["linear", "rrf"],
        default="linear",
        help="hybrid fusion: min-max normalised scores or reciprocal ranks (default: %(default)s)",
    )
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.set_defaults(handler=lazy_handler("flmr.cli.commands", "run_search"))


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = _command(
        commands,
        "serve",
        "Serve an index over HTTP: a JSON API (schema at /docs) and a search page at /.",
        "  flmr serve my_index\n"
        "  flmr serve my_index --host 0.0.0.0 --port 8080 --max-batch-size 64 --batch-wait-ms 3\n"
        '  curl "http://127.0.0.1:8000/api/search?q=text+editor&k=3"\n\n'
        "Queries that arrive together are encoded in one forward pass (up to --max-batch-size,\n"
        "waiting at most --batch-wait-ms for company). Document images are served only from the\n"
        "paths stored in the index; --image-root restricts them further to one folder.",
    )
    serve.add_argument("index", help="index folder")
    serve.add_argument("--checkpoint", help="checkpoint to encode queries (default: the index's)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    serve.add_argument(
        "--device", type=device_name, default="cpu", help="cpu, cuda, cuda:N (default: %(default)s)"
    )
    _add_precision(serve)
    serve.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=32,
        help="most queries encoded together in one forward pass (default: %(default)s)",
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long a query waits for others (default: %(default)s)",
    )
    serve.add_argument(
        "--max-k",
        type=positive_int,
        default=100,
        help="most results a query may ask for (default: %(default)s)",
    )
    serve.add_argument(
        "--image-root", metavar="FOLDER", help="serve document images only from inside this folder"
    )
    add_search_options(
        serve,
        "score every document by full MaxSim: exact, batched, fast on small indexes, slow on large ones",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level",
    )
    serve.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="serve a (sharded) index on Ray Serve: a cluster address, `auto`, or `local` (see docs/scale-out.md)",
    )
    serve.add_argument(
        "--replicas",
        type=positive_int,
        default=1,
        help="with --ray: replicas of each shard (default: %(default)s)",
    )
    serve.set_defaults(handler=lazy_handler("flmr.cli.commands", "run_serve"))


def _add_score(commands: argparse._SubParsersAction) -> None:
    score = _command(
        commands,
        "score",
        "Encode queries (text, optionally one image each) and documents; print every MaxSim score.",
        '  flmr score --checkpoint LinWeizheDragon/PreFLMR_ViT-B --query "what is this?" --image photo.jpg \\\n'
        '      --document "The Eiffel Tower is in Paris." --document "Big Ben is in London."',
    )
    score.add_argument("--checkpoint", required=True, help="checkpoint folder or hub name")
    score.add_argument("--query", action="append", required=True, help="a query text (repeat for several)")
    score.add_argument(
        "--document", action="append", required=True, help="a document text (repeat for several)"
    )
    score.add_argument("--image", action="append", help="an image file per query (repeat, in query order)")
    score.add_argument("--image-processor", help="image processor name or folder (default: the config's)")
    score.set_defaults(handler=lazy_handler("flmr.cli.score", "run_score"))


def main(argv: list[str] | None = None) -> int:
    """Run the ``flmr`` command; returns its exit code (see ``flmr --help``).

    Example:
        >>> main(["search", "my_index", "Which text editor can I use in a terminal?", "-k", "2"])
        rank      score     pid  id         text
           1 ...
           2 ...
        0
        >>> main(["search", "my_index", "vim", "--ndocs", "0"])  # a usage error: its message goes to stderr
        2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits 2 on a usage error, 0 after --help
        return int(stop.code or 0)
    if args.quiet and hasattr(args, "no_progress"):  # `flmr --quiet evaluate`
        args.no_progress = True
    try:
        with quiet_output(args.quiet):
            code = args.handler(args)
            sys.stdout.flush()  # a reader that went away shows here, not at exit
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `flmr info --json | head`: the reader stopped reading, as it meant to
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail again on the closed pipe."""
    # ValueError, OSError: stdout is no file (captured by a test), so nothing is flushed at exit
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
