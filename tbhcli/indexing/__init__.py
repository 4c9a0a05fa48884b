"""`tbh index`: images -> codes appended to a store, on this machine or on a Dask cluster.

`index` (the verb: lists the folders, opens the model and the store, runs one of the two paths
and returns an `IndexReport`), `tables` (what a table lacks and how encoded files are committed,
shared by both paths), `cluster` (the Dask path: workers decode and encode, the client writes).
"""
