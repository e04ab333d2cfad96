"""reidkit: re-identification ensembles from PyTorch training to fast inference.

The top-level package stays import-light on purpose: the lean runtime (``reidkit.runtime``)
must never pull in torch or timm, so nothing here may import them.
"""

__version__ = "0.1.0"
