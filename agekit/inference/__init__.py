"""agekit subpackage."""
