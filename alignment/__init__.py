"""alignment: an RLHF and alignment research framework built on TRL, transformers and Hydra."""

from alignment.errors import AlignmentError

__version__ = "0.1.0"
__all__ = ["AlignmentError", "__version__"]
