"""Exact Hamming search over packed codes: the only code that scans codes.

`topk` and `radius_search` (scan.py) stream a database (array, zarr array, CodeStore or store
path) in blocks through the numba kernels (kernels.py), or over a Dask cluster (cluster.py);
`near_pairs` (pairs.py) finds every pair within a radius for `tbh duplicates`; `distance_histograms`
(histograms.py) counts distances for the radius metrics. `topk_reference` and `radius_reference`
are the slow, obvious definitions the fast paths are tested against.
"""

from tbhcli.search.histograms import distance_histograms
from tbhcli.search.pairs import near_pairs
from tbhcli.search.scan import (
    as_words,
    check_threads,
    radius_reference,
    radius_search,
    topk,
    topk_reference,
)

__all__ = [
    "as_words",
    "distance_histograms",
    "near_pairs",
    "check_threads",
    "radius_reference",
    "radius_search",
    "topk",
    "topk_reference",
]
