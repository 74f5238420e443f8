# mod_wsgi entry point: builds the app from the config file named by
# PYPI_FALLBACK_CONFIG (set by the generated Apache drop-in), else the default path.
from pypi_fallback.app import make_app
from pypi_fallback.config import load_settings

application = make_app(load_settings())
