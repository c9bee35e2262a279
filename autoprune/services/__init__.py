"""The team's shared servers as autoprune reaches them: URLs with their passwords hidden
(:mod:`~autoprune.services.urls`) and database checks and locks (:mod:`~autoprune.services.databases`).

Used by the study storage (:mod:`autoprune.search.storage`), the MLflow tracker and UI
(:mod:`autoprune.tracking`) and the exporter; imports nothing of autoprune above :mod:`autoprune.errors`.
"""
