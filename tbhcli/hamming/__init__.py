"""Hamming distance over packed codes held in memory: the engines that search/ drives.

`kernels` (numba XOR + popcount top-k and radius scans), `blocks` (one in-memory block of a
database searched on a thread pool, and the exact merge of blocks), `mih` (the multi-index
structure: building its tables and probing them). Nothing here knows about stores, Dask or
which engine answers a search: storage/ keeps the multi-index tables on disk and search/ decides.
"""
