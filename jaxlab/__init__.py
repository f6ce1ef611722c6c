"""jaxlab: small-transformer experiments of the in-context-learning literature, at scale, in JAX.

The package's front door: `jaxlab.load(run_dir)` opens a sweep's run directory for analysis
(`jaxlab.loading`); sweeps run with `jaxlab run` or `jaxlab.train.run_sweep`.
"""

from jaxlab._version import __version__
from jaxlab.loading import Sweep, load

__all__ = ["Sweep", "__version__", "load"]
