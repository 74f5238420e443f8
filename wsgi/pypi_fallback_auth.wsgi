# mod_wsgi authentication (and, with LDAP, group) provider for upload tokens
# (WSGIAuthUserScript, WSGIAuthGroupScript in the drop-in).
# It runs inside Apache's own processes (never the daemon), so it finds the package in the
# venv it was installed with: <venv>/share/pypi-fallback/ is where this file lives.
import os
import sys

_venv = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_site = os.path.join(_venv, "lib", "python%d.%d" % sys.version_info[:2], "site-packages")
if _site not in sys.path:
    sys.path.append(_site)

from pypi_fallback.tokens import check_password, groups_for_user  # noqa: E402,F401
