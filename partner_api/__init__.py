"""Partner API: the web app (create_app) and the code the dispatcher shares with it.

The app factory wires config, database, API blueprints, error handling and the admin CLI.
"""

__version__ = "1.0.0"


def create_app(test_config=None):
    """Build the Flask app; `test_config` overrides settings read from the environment."""
    from partner_api.web.app import build_app

    return build_app(test_config)
