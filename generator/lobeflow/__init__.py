"""lobeflow: scaffold and run durable three-layer fan-out workflows on Upstash Workflow + QStash."""

from lobeflow.errors import LobeflowError

__version__ = "0.2.0"

__all__ = ["LobeflowError", "__version__"]
