"""ssl-bench: a benchmark harness for semi-supervised learning where every method is a plugin."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ssl-bench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from ssl_bench.errors import UserError
from ssl_bench.method import Batch, MethodContext, Progress, SSLMethod, View

__all__ = ["Batch", "MethodContext", "Progress", "SSLMethod", "UserError", "View", "__version__"]
