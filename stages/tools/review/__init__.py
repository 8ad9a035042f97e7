"""kiln review: a page where a person keeps or rejects crawled images for a filter ensemble.

Decisions land in the filter's ``labels.folder`` (``keep/``, ``reject/``), which the filter
stage reads, so the next run of the filter retrains on them; the images the ensemble is
least sure of come first (active learning).

Modules: target (which filter and folder), scores (the ensemble's score per crawled image),
queue (review order), decisions (the label files), session (one review's state), router
(the FastAPI routes under /review, ``review_router``), static/ (the page), __main__ (the command).
"""
from stages.tools.review.router import review_router

__all__ = ["review_router"]
