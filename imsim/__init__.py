"""imsim: compare image-similarity methods on classes they never saw.

The core library shared by every stage (``train``, ``export``, ``engines``, ``bench``, ``search``):
datasets and class splits, evaluation protocols, metrics, the method registry and the results
schema.
"""

__version__ = "0.1.0"
