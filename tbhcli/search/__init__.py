"""Exact Hamming search over a database of packed codes: what answers, over which rows.

`topk` and `radius_search` (api.py) pick the engine: the scan of a database read in blocks
(scan.py), the multi-index tables of a store (planner.py), or a store's blocks on a Dask cluster
(cluster.py); the engines themselves work on codes in memory (`tbhcli.hamming`). `near_pairs`
(pairs.py) finds every pair within a radius for `tbh duplicates`; `distance_histograms`
(histograms.py) counts distances for the radius metrics. `topk_reference` and `radius_reference`
are the slow, obvious definitions the fast paths are tested against.
"""

from tbhcli.hamming.blocks import as_words, check_threads
from tbhcli.search.api import radius_search, topk
from tbhcli.search.histograms import distance_histograms
from tbhcli.search.pairs import near_pairs
from tbhcli.search.scan import radius_reference, topk_reference

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
