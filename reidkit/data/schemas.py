"""The one home of the CSV schemas reidkit reads and writes (docs/formats.md describes them).

Readers and writers name these tuples instead of restating column names, so a format
changes in one place.
"""

from __future__ import annotations

# reid infer, image rows: one per (query, gallery image), best first; score in [0, 1]
MATCHES = ("query_id", "database_image_id", "score")
# reid infer --by identity: one per (query, identity), best first; database_image_id is the identity's best image
IDENTITY_MATCHES = ("query_id", "identity", "score", "database_image_id")
# ground truth: every true (query, gallery image) pair
LABELS = ("query_id", "database_image_id")
# Whale-do scenarios: query_scenarios.csv, each scenario's queries file, and its database file
SCENARIOS = ("scenario_id", "queries_path", "database_path")
SCENARIO_QUERIES = ("query_id", "query_image_id")
SCENARIO_DATABASE = ("database_image_id",)
# Whale-do metadata.csv: required columns (optional: whale_id or identity, bbox, viewpoint, date, encounter_id)
METADATA = ("image_id", "path")
# the review page's decisions
DECISIONS = ("query_id", "decision", "identity_or_image")
DECISION_KINDS = ("confirm", "reject", "new_individual")
