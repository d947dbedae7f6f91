"""genlab: a lab for generative models built on PyTorch Lightning and Hydra.

Every model learns P(x) and is judged on density estimation (nats, bits/dim), sampling and
representation; see ``genlab.models.base.GenerativeModel`` for the one protocol they share.
"""

__version__ = "0.1.0"

from genlab.utils import launchers as _launchers  # noqa: E402, F401  (the resolvers of conf/hydra/launcher/)
