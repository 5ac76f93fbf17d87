"""Image search over an embedded gallery: the index, queries, the HTTP API and its web page.

An application built on the core library: any registered method embeds the gallery and the
queries (``imsim.methods``), and the index is plain files (``search.index``).
"""
