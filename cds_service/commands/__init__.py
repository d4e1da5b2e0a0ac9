"""The ``cds-service`` sub-commands other than ``serve``: one module each, registered in ``cli.COMMANDS``."""
