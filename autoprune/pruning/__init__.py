"""The pruning engine: named groups, methods, schedules, the policy, the Lightning callback, compaction, recovery."""
