"""modeldeploy's model server (Open Inference Protocol v2) and model optimization tools."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modeldeploy")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
