"""The query-embedding service (``omni serve``): HTTP app, cache, entity index, metrics, launch."""
