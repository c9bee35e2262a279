"""Reproducible benchmarks of autoprune against baselines: ``python -m benchmarks [--quick] [--only NAME ...]``.

See ``benchmarks/README.md``; results land in ``benchmarks/results/``.
"""

#: run order (latency_fronts reads the JapaneseVowels autoprune study that search_quality writes)
BENCHMARKS = ["training_overhead", "hidden_unit_latency", "search_quality", "sampler_choice", "latency_fronts", "trial_overhead", "int8_latency", "int8_search", "ray_scaling", "frames_front", "storage_ceiling"]
