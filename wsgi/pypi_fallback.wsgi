# mod_wsgi entry point. The app is built on the first request, from the config file named
# by PYPI_FALLBACK_CONFIG (the drop-in sets it with SetEnv), else the default path.
from pypi_fallback.app import application  # noqa: F401
