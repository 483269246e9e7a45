"""Typed search settings: how a searcher finds the top-k (PLAID knobs, exact search, hybrid fusion).

One ``SearchSettings`` object travels from the user (Python API, CLI flags, the service's settings, the
evaluation runner) to ``build_searcher``, which makes the searcher it describes. Per-request choices
(``k``, a metadata filter, a hybrid weight) stay arguments of the call; ``with_hybrid`` derives the
settings of one request.

This module imports neither torch nor NumPy, so the command line can check settings before anything
heavy loads.

Example:
    >>> settings = SearchSettings(plaid=PlaidSettings(ndocs=4096))
    >>> settings.plaid.ndocs, settings.exact
    (4096, False)
    >>> SearchSettings.from_options(ncells=8, exact=False).plaid.ncells
    8
    >>> SearchSettings.from_options(ndoc=8)
    Traceback (most recent call last):
    ...
    flmr.search.errors.SearchSettingsError: unknown search option 'ndoc': known are candidate_query_vectors, centroid_score_threshold, exact, exact_when_cheaper, fusion, grow_with_collection, hybrid_depth, hybrid_weight, ncells, ndocs, normalize_decompressed, queries_per_pass
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from flmr.search.errors import SearchSettingsError

CandidateQueryVectors = Literal["all", "text_first_32"]
CANDIDATE_QUERY_VECTORS = ("all", "text_first_32")
Fusion = Literal["linear", "rrf"]
FUSIONS = ("linear", "rrf")
DEFAULT_HYBRID_DEPTH = 100
# Cells probed per query vector: indexes have 4x ColBERT's centroids (flmr.index.kmeans), so 4x its
# cells cover about the same share of the collection. 10k Debian documents, 32,768 centroids,
# query()-encoded queries: the candidates held 0.893 of the exact top 10 with 8 cells, 0.964 with 16.
DEFAULT_NCELLS = 16
# Centroids scoring below this for every query vector are left out of the pruned centroid interaction.
# 0.45 dropped documents that exact MaxSim ranks in its top 10 (10k documents: 0.958 of the exact top
# 10 among the candidates, 0.926 after the pruned top 2,048); with 0.3 the pruned scores rank as well as
# the unpruned ones (0.956 after the pruned top 2,048; 0.2 or no pruning gained nothing further).
DEFAULT_CENTROID_SCORE_THRESHOLD = 0.3


@dataclass(frozen=True)
class PlaidSettings:
    """The knobs of PLAID search (see ``flmr.search.PlaidSearcher`` for the stages they steer).

    Args:
        ncells: centroids (cells) probed per candidate-generating query vector (ColBERTv2: ``ncells``).
        centroid_score_threshold: centroids scoring below this for every query vector are pruned in
            the first centroid-interaction pass (ColBERTv2: ``centroid_score_threshold``).
        ndocs: documents kept after the pruned centroid interaction; ``ndocs // 2`` are re-ranked
            exactly (ColBERTv2: ``ndocs``). Raised to ``k`` when smaller.
        grow_with_collection: past 25,000 live documents, search with ``ncells * g`` and
            ``ndocs * g**1.5``, ``g = sqrt(documents / 25,000)`` (see ``PlaidSearcher.budget_growth``).
        candidate_query_vectors: ``"all"`` non-zero query vectors generate candidates, or the
            ``"text_first_32"`` like the original engine.
        exact_when_cheaper: search exactly when the collection is so small that exact MaxSim costs
            less than the PLAID stages (then the results are exact search's).
        queries_per_pass: queries whose stages run together (None: 1 on CPU, 32 on an accelerator).

    Raises:
        SearchSettingsError: a count is not positive or ``candidate_query_vectors`` is unknown.
    """

    ncells: int = DEFAULT_NCELLS
    centroid_score_threshold: float = DEFAULT_CENTROID_SCORE_THRESHOLD
    ndocs: int = 2048
    grow_with_collection: bool = True
    candidate_query_vectors: CandidateQueryVectors = "all"
    exact_when_cheaper: bool = True
    queries_per_pass: int | None = None

    def __post_init__(self) -> None:
        if self.candidate_query_vectors not in CANDIDATE_QUERY_VECTORS:
            raise SearchSettingsError(
                f"candidate_query_vectors must be one of {CANDIDATE_QUERY_VECTORS}, "
                f"got {self.candidate_query_vectors!r}"
            )
        if self.ncells < 1 or self.ndocs < 1:
            raise SearchSettingsError(
                f"ncells and ndocs must be positive, got ncells={self.ncells}, ndocs={self.ndocs}"
            )
        if self.queries_per_pass is not None and self.queries_per_pass < 1:
            raise SearchSettingsError(f"queries_per_pass must be positive, got {self.queries_per_pass}")


@dataclass(frozen=True)
class HybridSettings:
    """Fusion of late-interaction scores with BM25 over the stored texts (see ``HybridSearcher``).

    Args:
        weight: BM25's share of the fused score, in [0, 1].
        fusion: ``"linear"`` (min-max normalised scores) or ``"rrf"`` (reciprocal ranks).
        depth: candidates taken from each side (raised to ``k``).

    Raises:
        SearchSettingsError: ``weight`` outside [0, 1], an unknown ``fusion``, or ``depth < 1``.
    """

    weight: float = 0.5
    fusion: Fusion = "linear"
    depth: int = DEFAULT_HYBRID_DEPTH

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise SearchSettingsError(f"the hybrid weight must be in [0, 1], got {self.weight}")
        if self.fusion not in FUSIONS:
            raise SearchSettingsError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.depth < 1:
            raise SearchSettingsError(f"the hybrid depth must be positive, got {self.depth}")


@dataclass(frozen=True)
class SearchSettings:
    """How to search: exactly or by PLAID (with its knobs), on which vectors, fused with BM25 or not.

    Args:
        exact: score every document by full MaxSim (the quality reference) instead of PLAID.
        plaid: the PLAID knobs (ignored when ``exact``).
        normalize_decompressed: score an index without a float16 store by its decompressed vectors
            re-projected onto the unit sphere (as the original engine does).
        hybrid: fuse with BM25 (None: late interaction alone).

    Example:
        >>> SearchSettings(exact=True).with_hybrid(0.3).hybrid
        HybridSettings(weight=0.3, fusion='linear', depth=100)
    """

    exact: bool = False
    plaid: PlaidSettings = field(default_factory=PlaidSettings)
    normalize_decompressed: bool = True
    hybrid: HybridSettings | None = None

    def with_hybrid(
        self, weight: float | None, fusion: Fusion = "linear", depth: int | None = None
    ) -> SearchSettings:
        """These settings with BM25 fusion at ``weight`` (None: without fusion)."""
        if weight is None:
            return replace(self, hybrid=None)
        depth = depth or (self.hybrid.depth if self.hybrid else DEFAULT_HYBRID_DEPTH)
        return replace(self, hybrid=HybridSettings(weight=weight, fusion=fusion, depth=depth))

    @classmethod
    def from_options(
        cls,
        exact: bool = False,
        normalize_decompressed: bool = True,
        hybrid_weight: float | None = None,
        fusion: Fusion = "linear",
        hybrid_depth: int = DEFAULT_HYBRID_DEPTH,
        **plaid_options: Any,
    ) -> SearchSettings:
        """Settings from flat keyword options, the form earlier versions took (``ncells=8, ndocs=4096``).

        Raises:
            SearchSettingsError: an option that is no search setting (named, with the known ones), or a
                value out of range.
        """
        known = {f.name for f in fields(PlaidSettings)}
        unknown = sorted(set(plaid_options) - known)
        if unknown:
            names = ", ".join(sorted(known | set(_FLAT_OPTIONS)))
            raise SearchSettingsError(f"unknown search option {unknown[0]!r}: known are {names}")
        settings = cls(
            exact=exact, plaid=PlaidSettings(**plaid_options), normalize_decompressed=normalize_decompressed
        )
        return settings.with_hybrid(hybrid_weight, fusion, hybrid_depth)

    def to_options(self) -> dict[str, Any]:
        """The flat keyword form of ``from_options`` (JSON-friendly; recorded in evaluation reports).

        Example:
            >>> SearchSettings.from_options(**SearchSettings().to_options()) == SearchSettings()
            True
        """
        options: dict[str, Any] = {"exact": self.exact, "normalize_decompressed": self.normalize_decompressed}
        options.update({f.name: getattr(self.plaid, f.name) for f in fields(PlaidSettings)})
        if self.hybrid is not None:
            options.update(
                hybrid_weight=self.hybrid.weight, fusion=self.hybrid.fusion, hybrid_depth=self.hybrid.depth
            )
        return options


_FLAT_OPTIONS = ("exact", "normalize_decompressed", "hybrid_weight", "fusion", "hybrid_depth")


def search_settings(settings: SearchSettings | PlaidSettings | None = None, **options: Any) -> SearchSettings:
    """``settings``, or ``SearchSettings.from_options`` of the options that are not None; both at once
    is an error.

    The one place where a call that still passes flat options (``exact=True, ndocs=4096``) meets one
    that passes a ``SearchSettings``.

    Raises:
        SearchSettingsError: both were given, or an option is unknown or out of range.
    """
    given = {name: value for name, value in options.items() if value is not None}
    if isinstance(settings, PlaidSettings):
        settings = SearchSettings(plaid=settings)
    if settings is None:
        return SearchSettings.from_options(**given)
    if given:
        raise SearchSettingsError(
            f"pass either settings= or the search options {sorted(given)}, not both "
            "(dataclasses.replace(settings, ...) derives new settings)"
        )
    return settings
