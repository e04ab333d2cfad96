"""The one home of the CSV schemas reidkit reads and writes (docs/formats.md describes them).

Readers and writers name these tuples instead of restating column names, so a format
changes in one place.
"""

from __future__ import annotations

# reid infer, image rows: one per (query, gallery image), best first; score in [0, 1]
MATCHES = ("query_id", "database_image_id", "score")
# reid infer --by identity: one per (query, identity), best first; database_image_id is the identity's best image
IDENTITY_MATCHES = ("query_id", "identity", "score", "database_image_id")
# with a calibration file: P(same individual) of each row, appended to either of the above
P_SAME = "p_same"
# the identity of the open-set row (--new-individual): "none of the known individuals"; never a real identity's name
NEW_INDIVIDUAL = "new_individual"
# ground truth: every true (query, gallery image) pair
LABELS = ("query_id", "database_image_id")
# Whale-do scenarios: query_scenarios.csv, each scenario's queries file, and its database file
SCENARIOS = ("scenario_id", "queries_path", "database_path")
SCENARIO_QUERIES = ("query_id", "query_image_id")
SCENARIO_DATABASE = ("database_image_id",)
# Whale-do metadata.csv: required columns (optional: whale_id or identity, bbox, viewpoint, date, encounter_id)
METADATA = ("image_id", "path")
METADATA_IDENTITY = ("identity", "whale_id")  # the first of these present names each image's individual
METADATA_OPTIONAL = ("bbox", "viewpoint", "date", "encounter_id")
ENCOUNTER = "encounter_id"  # photos of one sighting: ranked together with --group-by encounter
# wildlife-datasets metadata CSV: required columns, optional ones, and the identity that means "not identified"
WILDLIFE = ("identity", "path")
WILDLIFE_OPTIONAL = ("bbox", "date", "orientation")
UNKNOWN_IDENTITY = "unknown"
# the bounding-box column of both CSV layouts: [x, y, w, h] in pixels of the image as displayed
BBOX = "bbox"
# COCO JSON: the annotation keys that name the individual, first present wins (Wildbook exports use "name")
COCO_IDENTITY = ("identity", "name")
# the review page's decisions
DECISIONS = ("query_id", "decision", "identity_or_image")
DECISIONS_OPTIONAL = ("reviewer",)  # written by the page when the reviewer gave a name
DECISION_KINDS = ("confirm", "reject", "new_individual")
