"""The kopf registrations of sso-operator.

Why this package exists: ``kopf run -m sso_operator.handlers`` (and the
``sso-operator`` entry point) import this one package to register every handler
and the operator settings. Each module here stays thin: it translates kopf's
keyword arguments into calls of typed, tested functions elsewhere.
"""

from sso_operator import settings as settings
from sso_operator.handlers import clientapp as clientapp
from sso_operator.handlers import ssoinstance as ssoinstance

# isort: split
# After ssoinstance: in a shared processing cycle these run later and merge their
# conditions (KeysReady, BackupReady) into the patch it prepared.
from sso_operator.handlers import backup as backup
from sso_operator.handlers import keys as keys

__all__ = ["backup", "clientapp", "keys", "settings", "ssoinstance"]
