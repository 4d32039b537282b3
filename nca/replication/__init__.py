"""`nca replicate`: the paper's arm comparison as a seeded study (config.py -> plan.py -> launch.py, with state.py
keeping it idempotent), then the report (results.py, evaluate.py; statistics in nca.analysis.stats/analysis.report)."""
