"""vision subpackage."""
