"""Data readers: folder-per-identity trees, Whale-do CSVs, the ORL faces and the synthetic
Whale-do generator. numpy/PIL only, shared by training, the runtime and the benchmarks."""

from reidkit.data.samples import Sample
from reidkit.data.folders import read_identity_folders
from reidkit.data.whaledo import read_metadata, read_scenarios, Scenario
from reidkit.data.orl import orl_root, read_orl

__all__ = ["Sample", "read_identity_folders", "read_metadata", "read_scenarios", "Scenario", "orl_root", "read_orl"]
