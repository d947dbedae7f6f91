"""Classical generative models as LightningModules: PCA, linear autoencoder, probabilistic PCA, factor
analysis, Gaussian mixtures and K-means, all under the ``GenerativeModel`` protocol.

Every model flattens images to ``P = spec.num_dims`` features. Those without gradients
(:class:`~genlab.models.classical.fitting.FittedModel`, capability ``fit``) are fitted by passes over
the training data, one pass per epoch, by :func:`genlab.passes.fit_by_passes` (the CLI) or
``fit_tensor`` (in memory); the linear autoencoder trains by gradient steps in the Trainer. The
continuous densities (``ppca``, ``factor_analysis``, ``gmm``) need ``data.representation=dequantized``.
"""

from genlab.models.classical.factor_analysis import FactorAnalysis
from genlab.models.classical.kmeans import KMeans
from genlab.models.classical.linear_ae import LinearAutoencoder
from genlab.models.classical.mixture import GaussianMixture
from genlab.models.classical.pca import PCA
from genlab.models.classical.ppca import PPCA

__all__ = ["PCA", "PPCA", "FactorAnalysis", "GaussianMixture", "KMeans", "LinearAutoencoder"]  # the six models
