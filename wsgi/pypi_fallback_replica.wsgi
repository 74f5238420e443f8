# mod_wsgi entry point of a read replica (regen-rules --replica-of): the one request to the
# primary for a distribution or metadata file the replica's folder lacks. The drop-in gives
# the primary's URL and the folder with SetEnv.
from pypi_fallback.replica import application  # noqa: F401
