"""The FrEVL reranker: a small trained head over frozen embeddings.

Modules: :mod:`~frozenlens.reranker.model` (the network),
:mod:`~frozenlens.reranker.features` (token sequences),
:mod:`~frozenlens.reranker.head` (save / load / score),
:mod:`~frozenlens.reranker.train` (training), :mod:`~frozenlens.reranker.data`
(training sets and the evaluation hook). This package module stays light
(no torch import) so :mod:`frozenlens.engine` can name the files cheaply.
"""

#: a head's files inside an index directory
WEIGHTS_NAME = "reranker.safetensors"
CONFIG_NAME = "reranker.json"
