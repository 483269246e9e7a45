"""How the commands print: result tables, index summaries, sizes."""

import json
import shutil
from pathlib import Path
from typing import Any

from flmr.index import Index
from flmr.search import HybridHit, SearchHit


def human_size(num_bytes: int) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    Example:
        >>> human_size(3 * 1024 * 1024)
        '3.0 MiB'
    """
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def folder_size(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def hit_record(hit: SearchHit) -> dict[str, Any]:
    document = hit.document.to_dict() if hit.document is not None else {}
    fused_from = (
        {"late_interaction_score": hit.late_interaction_score, "bm25_score": hit.bm25_score}
        if isinstance(hit, HybridHit)
        else {}
    )
    return {"rank": hit.rank, "pid": hit.pid, "score": hit.score, **fused_from, **document}


def print_hits_table(hits: list[SearchHit]) -> None:
    """One line per hit, the text cut to the terminal's width."""
    if not hits:
        print("no results")
        return
    ids = [str(hit.document.id) if hit.document else "" for hit in hits]
    id_width = min(24, max(2, *(len(i) for i in ids)))
    header = f"{'rank':>4}  {'score':>9}  {'pid':>6}  {'id':<{id_width}}  text"
    text_width = max(20, shutil.get_terminal_size((120, 24)).columns - len(header) + 4)
    print(header)
    for hit, doc_id in zip(hits, ids, strict=True):
        text = " ".join((hit.document.text or "").split()) if hit.document else ""
        if len(text) > text_width:
            text = text[: text_width - 1] + "…"
        image = "  [image]" if hit.document and hit.document.image_path else ""
        print(
            f"{hit.rank:>4}  {hit.score:>9.3f}  {hit.pid:>6}  {doc_id[:id_width]:<{id_width}}  {text}{image}"
        )


def index_summary(index: Index) -> dict[str, Any]:
    """What ``flmr info`` reports about an index."""
    counts = index.manifest.get("counts", {})
    return {
        "path": str(index.path.resolve()),
        "checkpoint": index.encoder.checkpoint,
        "encoder_digest": index.encoder.digest,
        "num_documents": index.num_documents,
        "num_deleted": int(counts.get("num_deleted", int(index.deleted.sum()))),
        "num_vectors": index.num_vectors,
        "dim": index.dim,
        "nbits": index.nbits,
        "num_partitions": index.num_partitions,
        "size_bytes": folder_size(index.path),
        "build_seconds": index.manifest.get("build_seconds"),
        "generation": index.generation,
        "settings": index.settings,
    }


def print_index_summary(summary: dict[str, Any]) -> None:
    rows = {
        "index": summary["path"],
        "checkpoint": f"{summary['checkpoint']} (digest {summary['encoder_digest']})",
        "documents": f"{summary['num_documents']} ({summary['num_deleted']} deleted)",
        "vectors": f"{summary['num_vectors']} of dim {summary['dim']}, {summary['nbits']} bits per dimension",
        "partitions": summary["num_partitions"],
        "size on disk": human_size(summary["size_bytes"]),
        "updates": summary["generation"],
        "settings": json.dumps(summary["settings"], sort_keys=True),
    }
    if summary["build_seconds"] is not None:
        rows["build time"] = f"{summary['build_seconds']:.1f} s"
    for name, value in rows.items():
        print(f"{name:<13} {value}")
