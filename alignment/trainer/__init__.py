"""The ``trainer.*`` config of a TRL stage: its schema from TRL's config classes (``schema``), the checks run before
any model loads (``checks``), and the TRL arguments built from it (``args``).

``python -m alignment.trainer STAGE`` prints every ``trainer.*`` option of a stage with TRL's help text and default.
"""
