"""FAISS indexes over training descriptors: checking descriptors, building, configuring and
searching flat / HNSW / IVF-PQ indexes, leave-one-out and broad (confirming) searches.

Distances are Euclidean (L2) in descriptor units; FAISS returns squared distances, converted
here. An HNSW index stores the rows grouped by k-means cell (:func:`cell_order`) inside an
``IndexIDMap`` that translates its results back to training rows (:func:`hnsw_graph`,
:func:`stored_rows`).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from ltau_md.core.exceptions import DescriptorError, InvalidParameterError, LTAUError

__all__ = [
    "AUTO_HNSW_MIN_ATOMS",
    "BROAD_EF_SEARCH",
    "LOO_EF_SEARCH",
    "INDEX_KINDS",
    "ORDER_CELLS",
    "IndexSettings",
    "cell_order",
    "broad_search",
    "build_index",
    "check_descriptors",
    "check_index_kind",
    "configure_search",
    "hnsw_graph",
    "index_kind_for",
    "leave_one_out_search",
    "release_pages",
    "search",
    "set_threads",
    "stored_rows",
    "stored_vectors",
]

INDEX_KINDS = ("flat", "hnsw", "ivfpq")
#: ``index="auto"`` builds an exact flat index below this many training atoms, HNSW from it on.
#: benchmarks/bench_estimator.py (1 thread): HNSW overtakes flat in speed at ~4e3 atoms, but
#: below 1e4 a flat 200-atom query costs <= 8 ms, is exact and builds instantly
AUTO_HNSW_MIN_ATOMS = 10_000
#: HNSW efSearch of the broad re-search of atoms that look novel (at least 8k): on
#: benchmarks/bench_reference.py data at 4e5 atoms with efSearch 24, 128 keeps recall@10 at
#: 0.946 and the p99 confidence error at 0.024 for 3 ms less per 200-atom query than 256
BROAD_EF_SEARCH = 128
#: HNSW efSearch (at least the configured one) of the leave-one-out searches of training atoms
#: at fit: their misses would read as in-domain novelty and lift the tail that p-values (and
#: so the re-search) are read against (bench_reference data, 1e5 atoms, efSearch 24: the 1 %
#: tail at novelty 5.0, recall@10 0.968; at 64: 1.24 and 0.987)
LOO_EF_SEARCH = 64
#: k-means cells the rows of an HNSW index are grouped by in memory (:func:`cell_order`)
ORDER_CELLS = 256
#: rows checked / searched per chunk (bounds the float32 copies of a memory-mapped input)
CHUNK = 1 << 16
_INDEX_TYPES = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSW, "ivfpq": faiss.IndexIVFPQ}


def hnsw_graph(index: faiss.Index) -> faiss.IndexHNSW | None:
    """The HNSW index of ``index``: itself, or the cell-ordered one inside its
    ``IndexIDMap`` (:func:`cell_order`); None for other kinds."""
    if isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    return index if isinstance(index, faiss.IndexHNSW) else None


def stored_rows(index: faiss.Index) -> np.ndarray | None:
    """(N,) int64: the training row of each vector in the order ``index`` stores them, or None
    where that order is the training order."""
    if isinstance(index, faiss.IndexIDMap):
        return faiss.vector_to_array(index.id_map)
    return None


def stored_vectors(index: faiss.Index) -> np.ndarray:
    """Zero-copy (N, D) float32 view of the vectors of a flat or HNSW index, in the order
    it stores them (:func:`stored_rows`)."""
    graph = hnsw_graph(index)
    flat = faiss.downcast_index(graph.storage) if graph is not None else index
    n, d = flat.ntotal, flat.d
    return faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)


def cell_order(x: np.ndarray) -> np.ndarray:
    """(N,) int64: the rows of ``x`` (N, D) grouped by k-means cell (:data:`ORDER_CELLS`
    cells, 10 iterations on a seeded sample of 40 rows per cell; row order within a cell),
    so rows close in descriptor space lie close in memory once stored in this order.

    An HNSW graph built in this order touches fewer cache lines per search: on
    ``benchmarks/bench_reference.py`` data, 200-atom searches at efSearch 24 took about 20 %
    less CPU at 1e5 and 4e5 atoms (recall@10 0.951 -> 0.956, 0.938 -> 0.940) and the graph
    built about 12 % faster."""
    n, d = x.shape
    cells = min(ORDER_CELLS, max(1, n // 40))
    if cells < 2:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, min(n, 40 * cells), replace=False))
    kmeans = faiss.Kmeans(d, cells, niter=10, seed=0, min_points_per_centroid=1)
    kmeans.train(check_descriptors(x[sample], d, "training descriptors"))
    label = np.empty(n, dtype=np.int64)
    for a in range(0, n, CHUNK):
        label[a:a + CHUNK] = kmeans.index.search(
            check_descriptors(x[a:a + CHUNK], d, "training descriptors"), 1)[1][:, 0]
        release_pages(x)
    return np.argsort(label, kind="stable")


class IndexSettings:
    """The estimator parameters an index needs (read from the estimator, never copied)."""

    def __init__(self, est: Any):
        self.k = int(est.k)
        self.hnsw_m = int(est.hnsw_m)
        self.ef_construction = int(est.ef_construction)
        self.ef_search = int(est.ef_search)
        self.ivf_nlist = None if est.ivf_nlist is None else int(est.ivf_nlist)
        self.pq_m = int(est.pq_m)
        self.pq_nbits = int(est.pq_nbits)
        self.nprobe = int(est.nprobe)


def check_descriptors(x: Any, dim: int | None = None, what: str = "descriptors") -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 (n, D) array or raise a DescriptorError that names
    the wrong shape or the rows holding NaN/inf."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise DescriptorError(f"{what} must be 2-D (n_atoms, dim), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise DescriptorError(f"{what} have dimension {x.shape[1]}, the estimator expects {dim}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    for a in range(0, x.shape[0], CHUNK):
        chunk = x[a:a + CHUNK]
        ok = np.isfinite(chunk).all(axis=1)
        if not ok.all():
            bad = (np.flatnonzero(~ok)[:10] + a).tolist()
            raise DescriptorError(f"{what} contain NaN/inf in rows {bad}")
    return x


def index_kind_for(requested: str, n_train: int) -> str:
    """The kind built for the ``index`` parameter ``requested`` and ``n_train`` atoms."""
    if requested != "auto":
        return requested
    return "hnsw" if n_train >= AUTO_HNSW_MIN_ATOMS else "flat"


def set_threads(n_threads: int | None) -> None:
    """Set FAISS's OpenMP threads (None or 0: leave FAISS's default)."""
    if n_threads:
        faiss.omp_set_num_threads(int(n_threads))


def build_index(x: np.ndarray, kind: str, settings: IndexSettings) -> faiss.Index:
    """A FAISS index of ``kind`` holding the rows of ``x`` (n, D), configured for search."""
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatL2(d)
    elif kind == "hnsw":
        graph = faiss.IndexHNSWFlat(d, settings.hnsw_m)
        graph.hnsw.efConstruction = settings.ef_construction
        index = faiss.IndexIDMap(graph)
    else:
        nlist = int(settings.ivf_nlist or max(1, min(n // 39, int(4 * np.sqrt(n)))))
        if d % settings.pq_m:
            raise InvalidParameterError(
                f"pq_m={settings.pq_m} must divide the descriptor dimension {d}")
        index = faiss.index_factory(d, f"IVF{nlist},PQ{settings.pq_m}x{settings.pq_nbits}")
        # searches use the PQ distances (ADC), never Hamming filtering: polysemous training
        # (FAISS's default) would take ~85 % of the index build for nothing
        index.do_polysemous_training = False
        rng = np.random.default_rng(0)
        n_train = min(n, max(256 * nlist, 10_000), 500_000)
        sample = np.sort(rng.choice(n, n_train, replace=False))
        train = check_descriptors(x[sample], d, "training descriptors")
        release_pages(x)  # the sample's copy is all training needs
        index.train(train)
        del train
        # an inverted file takes chunks as well as one add: a memory-mapped input is read
        # a chunk at a time and its pages let go after each
        for a in range(0, n, CHUNK * 16):
            index.add(check_descriptors(x[a:a + CHUNK * 16], d, "training descriptors"))
            release_pages(x)
        configure_search(index, kind, settings)
        return index
    # one add call: HNSW graphs built from several add() calls connect clustered data
    # badly (recall 0.96 -> 0.83 on 4 chunks); HNSW takes a copy in cell order, a flat index
    # reads a float32 memmap in place
    if kind == "hnsw":
        order = cell_order(x)
        rows = check_descriptors(x[order], d, "training descriptors")
        release_pages(x)
        index.add_with_ids(rows, order)
        del rows
    else:
        index.add(check_descriptors(x, d, "training descriptors"))
        release_pages(x)
    configure_search(index, kind, settings)
    return index


def release_pages(x: np.ndarray) -> None:
    """Let the kernel drop the resident pages of the memory map under ``x`` (a
    ``np.memmap`` or a view of one; anything else: nothing to do), so a pass over a large
    memory-mapped input does not stay in the process's resident set. The data are read
    again from the file when next touched (a writable map's changes are in the page cache,
    not lost)."""
    import mmap

    a = x
    while a is not None:
        m = getattr(a, "_mmap", None)
        if isinstance(m, mmap.mmap):
            if hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
                try:
                    m.madvise(mmap.MADV_DONTNEED)
                except (OSError, ValueError):  # a closed or unusual map: keep its pages
                    pass
            return
        a = getattr(a, "base", None)


def configure_search(index: faiss.Index, kind: str, settings: IndexSettings) -> None:
    """Set the search breadth of ``index``: HNSW efSearch max(ef_search, k), IVF nprobe."""
    if kind == "hnsw":
        hnsw_graph(index).hnsw.efSearch = max(settings.ef_search, settings.k)
    elif kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = settings.nprobe


def check_index_kind(index: faiss.Index, kind: str) -> bool:
    """Whether ``index`` is a FAISS index of ``kind`` (HNSW: also cell-ordered in an
    ``IndexIDMap``)."""
    if kind == "hnsw":
        return hnsw_graph(index) is not None
    return kind in _INDEX_TYPES and isinstance(index, _INDEX_TYPES[kind])


def search(index: faiss.Index, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances (n, k), indices (n, k)) of the k nearest stored vectors of the float32 rows
    ``x``; LTAUError if FAISS finds fewer than k."""
    d2, idx = index.search(x, int(k))
    if np.any(idx < 0):
        raise LTAUError("FAISS returned fewer than k neighbours; raise nprobe or ef_search")
    return np.sqrt(np.maximum(d2, 0.0)), idx


def broad_search(index: faiss.Index, kind: str, x: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A much broader search than configured (HNSW: efSearch max(128, 8k); IVF-PQ: 8x nprobe,
    at most all lists); the index's settings are restored after. Rows FAISS could not fill
    hold index -1."""
    if kind == "hnsw":
        graph = hnsw_graph(index).hnsw
        old = graph.efSearch
        graph.efSearch = max(BROAD_EF_SEARCH, 8 * k, old)
        try:
            d2, idx = index.search(x, k)
        finally:
            graph.efSearch = old
    else:
        ivf = faiss.extract_index_ivf(index)
        old = ivf.nprobe
        ivf.nprobe = min(int(ivf.nlist), 8 * int(old))
        try:
            d2, idx = index.search(x, k)
        finally:
            ivf.nprobe = old
    return np.sqrt(np.maximum(d2, 0.0)), idx


def leave_one_out_search(index: faiss.Index, kind: str, x: np.ndarray, settings: IndexSettings,
                         rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean distance (n,) float32, neighbours (n, k)) of the training atoms ``rows`` (any
    order, sorted reads a memory map best; None: all N) to their k nearest *other* training
    atoms: one search of k+1 neighbours,
    the atom itself dropped (or, if a duplicate hid it, the farthest). An exact index
    searches exactly a sample of rows, or all rows up to :data:`AUTO_HNSW_MIN_ATOMS` atoms;
    all rows of more atoms (an O(N^2) search) go through a temporary HNSW graph. HNSW
    searches here use efSearch of at least :data:`LOO_EF_SEARCH`."""
    k, n = settings.k, int(x.shape[0])
    dim = int(x.shape[1])
    if rows is None and kind == "flat" and n > AUTO_HNSW_MIN_ATOMS:
        index = build_index(x, "hnsw", settings)
    graph = hnsw_graph(index)
    if graph is not None:
        ef_before = graph.hnsw.efSearch
        graph.hnsw.efSearch = max(ef_before, LOO_EF_SEARCH, k + 1)
    queries = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    dist = np.empty(queries.size, np.float32)
    nbrs = np.empty((queries.size, k), np.int64)
    kk = min(k + 1, n)
    for a in range(0, queries.size, CHUNK):
        ids = queries[a:a + CHUNK]
        xa = check_descriptors(x[a:a + CHUNK] if rows is None else x[ids], dim,
                               "training descriptors")
        release_pages(x)
        d2, idx = index.search(xa, kk)
        out = slice(a, a + ids.size)
        d = np.sqrt(np.maximum(d2, 0.0))
        is_self = idx == ids[:, None]
        if kk == k + 1:
            keep = ~is_self
            keep[~is_self.any(axis=1), -1] = False
            dist[out] = d[keep].reshape(-1, k).mean(axis=1)
            nbrs[out] = idx[keep].reshape(-1, k)
        else:  # k = N: every other training atom is a neighbour
            others = np.where(is_self, 0.0, d).sum(axis=1)
            dist[out] = others / max(k - 1, 1)
            nbrs[out] = idx
    if graph is not None:
        graph.hnsw.efSearch = ef_before
    if np.any(nbrs < 0):
        raise LTAUError("FAISS returned fewer than k+1 neighbours for training atoms; "
                        "raise nprobe or ef_search")
    return dist, nbrs
