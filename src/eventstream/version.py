"""The package's version (``eventstream.__version__``), in a module of its own so that the
rooms which name it (the API's OpenAPI document, the clients' User-Agent, tracing) need
not import the package's face."""

__version__ = "0.1.0"
