"""FrozenLens: multilingual image search on frozen pretrained encoders.

Importing this package has no side effects: no model is loaded, nothing is
read from or written to disk, and nothing touches the network.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
