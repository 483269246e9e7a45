"""Explicit integrity check of an index folder: every file against the checksum recorded at commit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flmr.index.errors import IndexFormatError
from flmr.index.segments import segment_files
from flmr.index.storage import MANIFEST_NAME, file_checksum, read_manifest


@dataclass
class VerifyReport:
    """What ``verify_index`` found: ``problems`` (one line per damaged or missing file) and
    ``unchecked`` (files without a recorded checksum: written by an older flmr)."""

    path: Path
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_index(path: str | Path) -> VerifyReport:
    """Read every file of the index at ``path`` and compare it with the checksum recorded at commit.

    Also loads the index (which checks every file's shape and the manifest's structure), so a problem
    that checksums cannot show is reported too. Reads the whole index: O(index size) disk reads.

    Example:
        >>> report = verify_index("my_index")
        >>> report.ok, report.problems
        (True, [])
    """
    from flmr.index.index import Index

    report = VerifyReport(Path(path))
    try:
        manifest = read_manifest(report.path)
    except IndexFormatError as error:
        report.problems.append(str(error))
        return report
    checksums = manifest.get("checksums") or {}
    stores_vectors = bool(manifest["settings"].get("stores_vectors", False))
    relatives = list(manifest["files"].values())
    for segment in manifest["segments"]:
        relatives += segment_files(segment["folder"], stores_vectors)
    for relative in relatives:
        file = report.path / relative
        if not file.is_file():
            report.problems.append(f"{file}: missing (named by {MANIFEST_NAME})")
        elif relative not in checksums:
            report.unchecked.append(str(file))
        elif file_checksum(file) != checksums[relative]:
            report.problems.append(
                f"{file}: damaged (its contents do not match the checksum recorded at commit)"
            )
        else:
            report.files_checked += 1
    if not report.problems:
        try:
            Index.load(report.path, auto_refresh=None)
        except IndexFormatError as error:
            report.problems.append(str(error))
    return report
